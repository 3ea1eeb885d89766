/* Execs itself again and again: each generation fills 32 MiB with a pattern of its number,
 * rewrites and checks it for a while (100 to 600 ms, drawn from the generation), then execs
 * this program with the next number. A move whose running rounds meet an exec must begin
 * again; a page from the wrong generation shows as "FAIL".
 *
 * Usage: execer STOPFILE [GENERATION]. The first generation prints "ready"; the one that
 * finds STOPFILE prints "generations=N fail=0" and exits 0 (1 after a failure). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WORDS (32UL << 20) / sizeof(uint64_t)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: execer STOPFILE [GENERATION]\n");
        return 2;
    }
    long gen = argc > 2 ? atol(argv[2]) : 0;
    if (gen == 0) {
        printf("ready\n");
        fflush(stdout);
    }
    uint64_t *mem = malloc(WORDS * sizeof(uint64_t));
    uint64_t pass = 0;
    double until = now() + 0.1 + (gen * 7919 % 500) / 1000.0;
    do {
        pass++;
        for (size_t i = 0; i < WORDS; i += 512)
            mem[i] = (uint64_t)gen << 40 ^ pass << 20 ^ i;
        for (size_t i = 0; i < WORDS; i += 512) {
            if (mem[i] != ((uint64_t)gen << 40 ^ pass << 20 ^ i)) {
                printf("FAIL generation %ld word %zu\n", gen, i);
                printf("generations=%ld fail=1\n", gen + 1);
                return 1;
            }
        }
    } while (now() < until);
    if (access(argv[1], F_OK) == 0) {
        printf("generations=%ld fail=0\n", gen + 1);
        return 0;
    }
    char next[32];
    snprintf(next, sizeof next, "%ld", gen + 1);
    execl(argv[0], argv[0], argv[1], next, (char *)NULL);
    perror("execl");
    return 2;
}
