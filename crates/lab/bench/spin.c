/* rmosix bench guest: a deterministic CPU-bound loop with no system calls in it.
 *
 * Usage: spin ROUNDS
 * Runs ROUNDS steps of a dependent xorshift64* chain (each step needs the previous one, so
 * neither the compiler nor the CPU can shorten it) and prints "compute_ms=X result=Y", the
 * time spent in the loop by CLOCK_MONOTONIC and the chain's end (printed, so the loop stays).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: spin ROUNDS\n");
        return 2;
    }
    unsigned long long rounds = strtoull(argv[1], NULL, 10);
    struct timespec t0, t1, c0, c1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t x = 88172645463325252ULL;
    for (unsigned long long i = 0; i < rounds; i++) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x *= 0x2545f4914f6cdd1dULL;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    double cpu = (double)(c1.tv_sec - c0.tv_sec) * 1e3 + (double)(c1.tv_nsec - c0.tv_nsec) / 1e6;
    printf("compute_ms=%.3f cpu_ms=%.3f result=%llu\n", ms, cpu, (unsigned long long)x);
    return 0;
}
