/* rmosix bench baseline: how fast fresh memory takes data on this node.
 *
 * Usage: fresh MIB
 * Maps MIB MiB of new anonymous memory and copies non-zero data into all of it, in 64 KiB
 * pieces from four threads, as a migration's target does (every page of an image lands in a
 * page the node must allocate, and the restore places pages from four threads). Prints
 * "bytes=N secs=S". On a VM whose host takes freed guest memory back, this includes the
 * host's own first-touch faults, which no migration can avoid either.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PIECE (64 << 10)
#define THREADS 4

static uint8_t piece[PIECE];
static uint8_t *mem;
static size_t bytes;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Thread k fills pieces k, k + THREADS, k + 2 * THREADS, ... */
static void *fill(void *arg) {
    size_t k = (size_t)arg;
    for (size_t off = k * PIECE; off < bytes; off += THREADS * PIECE)
        memcpy(mem + off, piece, PIECE);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: fresh MIB\n");
        return 2;
    }
    bytes = (size_t)strtoul(argv[1], NULL, 10) << 20;
    for (size_t i = 0; i < PIECE; i++)
        piece[i] = (uint8_t)(i * 131 + 7) | 1;
    mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("fresh: mmap");
        return 1;
    }
    pthread_t threads[THREADS];
    double start = now_s();
    for (size_t k = 0; k < THREADS; k++)
        if (pthread_create(&threads[k], NULL, fill, (void *)k) != 0) {
            fprintf(stderr, "fresh: cannot start a thread\n");
            return 1;
        }
    for (size_t k = 0; k < THREADS; k++)
        pthread_join(threads[k], NULL);
    double secs = now_s() - start;
    /* Read one byte back so the copies cannot be optimised away. */
    printf("bytes=%zu secs=%.6f check=%u\n", bytes, secs, mem[bytes - 1]);
    return 0;
}
