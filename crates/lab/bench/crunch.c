/* rmosix bench guest: one CPU-bound job of the spreading bench (and of the demo), with a result
 * that depends on every step, so a job that moved must print what one that never moved prints.
 *
 * Usage: crunch ROUNDS SEED
 * Stirs a 256 KiB array (small enough to stay in a core's cache, so the job is bound by the CPU
 * and not by memory shared with its neighbours) ROUNDS times, from a state drawn from SEED, and
 * prints "seed=SEED rounds=ROUNDS sum=S" on stdout, S a checksum of the array. It makes no
 * system call while it computes. On stderr: "cpu_ms=X", the CPU time it used
 * (CLOCK_PROCESS_CPUTIME_ID, which counts the time on every node it ran on), which the bench
 * reads to calibrate ROUNDS to the CPU-seconds it wants.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define WORDS (1 << 15) /* 256 KiB of uint64_t */

static uint64_t data[WORDS];

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: crunch ROUNDS SEED\n");
        return 2;
    }
    unsigned long long rounds = strtoull(argv[1], NULL, 10);
    unsigned long long seed = strtoull(argv[2], NULL, 10);
    uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 0x2545f4914f6cdd1dULL;
    for (int i = 0; i < WORDS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data[i] = x;
    }
    for (unsigned long long r = 0; r < rounds; r++) {
        for (int i = 0; i < WORDS; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data[i] = data[i] * 6364136223846793005ULL + (x ^ r);
        }
    }
    uint64_t sum = 1469598103934665603ULL;
    for (int i = 0; i < WORDS; i++)
        sum = (sum ^ data[i]) * 1099511628211ULL;
    struct timespec cpu;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
    printf("seed=%llu rounds=%llu sum=%016llx\n", seed, rounds, (unsigned long long)sum);
    fflush(stdout);
    fprintf(stderr, "cpu_ms=%.1f\n", (double)cpu.tv_sec * 1e3 + (double)cpu.tv_nsec / 1e6);
    return 0;
}
