/* rmosix bench guest: a process of N MiB to migrate.
 *
 * Usage: hog MIB
 * Allocates MIB MiB, fills every 8-byte word with splitmix64(index), so no page is zero and
 * no two pages are alike (neither zero-page skipping nor deduplication can flatter the
 * figures), prints "ready", then spins on CLOCK_MONOTONIC (vdso: no system call). Whenever
 * two consecutive clock reads are more than STALL_NS apart, the process was not running in
 * between (frozen for a migration, or descheduled): it prints "stall_ms=X", so the bench
 * sees the freeze from the process's own point of view, in both directions.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define STALL_NS 5000000LL /* 5 ms: far above a scheduler tick's worth of jitter */

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: hog MIB\n");
        return 2;
    }
    size_t bytes = (size_t)strtoul(argv[1], NULL, 10) << 20;
    uint64_t *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("hog: mmap");
        return 1;
    }
    size_t words = bytes / sizeof(uint64_t);
    for (size_t i = 0; i < words; i++)
        mem[i] = splitmix64(i) | 1; /* | 1: never a zero word */
    printf("ready\n");
    fflush(stdout);
    long long last = now_ns();
    volatile uint64_t sink = 0;
    for (;;) {
        long long t = now_ns();
        if (t - last > STALL_NS) {
            printf("stall_ms=%.3f\n", (double)(t - last) / 1e6);
            fflush(stdout);
            t = now_ns();
        }
        last = t;
        sink += mem[(size_t)t % words];
    }
}
