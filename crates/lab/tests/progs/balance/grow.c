/* A job whose memory grows when told: each line "grow" on stdin maps 4 MiB more, fills it
 * with a pattern and prints "mib=N" (its mapped total); "end" (or end of file) checks every
 * byte against the pattern and prints "intact mib=N", or "damaged mib=N chunk=C offset=O" and
 * exits 1. It does not run between lines: a job that waits on its input, not a CPU-bound one.
 *
 * Usage: grow */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define CHUNK (4u << 20)
#define MAX_CHUNKS 1024

static unsigned char *chunks[MAX_CHUNKS];

static unsigned char pattern(unsigned c, unsigned i) {
    return (unsigned char)(c * 131u + i * 7u + (i >> 12));
}

int main(void) {
    unsigned n = 0;
    char line[64];
    printf("ready\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin) && strcmp(line, "end\n") != 0) {
        if (strcmp(line, "grow\n") != 0 || n == MAX_CHUNKS) {
            fprintf(stderr, "grow: bad line or too big: %s", line);
            return 2;
        }
        unsigned char *p = mmap(NULL, CHUNK, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            perror("grow: mmap");
            return 2;
        }
        for (unsigned i = 0; i < CHUNK; i++)
            p[i] = pattern(n, i);
        chunks[n++] = p;
        printf("mib=%u\n", n * (CHUNK >> 20));
        fflush(stdout);
    }
    for (unsigned c = 0; c < n; c++)
        for (unsigned i = 0; i < CHUNK; i++)
            if (chunks[c][i] != pattern(c, i)) {
                printf("damaged mib=%u chunk=%u offset=%u\n", n * (CHUNK >> 20), c, i);
                return 1;
            }
    printf("intact mib=%u\n", n * (CHUNK >> 20));
    return 0;
}
