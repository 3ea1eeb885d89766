/* A CPU-bound job whose result says whether its computation survived its moves: it stirs a
 * 1 MiB array round after round and prints "rounds=R sum=S", S a checksum of the array.
 *
 * Usage: spin NAME        says "ready", computes until NAME.stop exists, then prints.
 *        spin - R [R...]  computes exactly R rounds, then prints: what a never-moved run of R
 *                         rounds prints; given several counts (ascending), prints the line
 *                         of each in one run, so that many jobs are checked at the cost of
 *                         the longest. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WORDS (1 << 17) /* 1 MiB of uint64_t */

static uint64_t data[WORDS];

static void round_of(uint64_t r) {
    uint64_t x = r * 0x9e3779b97f4a7c15ULL + 1;
    for (int i = 0; i < WORDS; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data[i] = data[i] * 6364136223846793005ULL + (x ^ (uint64_t)i);
    }
}

static uint64_t checksum(void) {
    uint64_t s = 1469598103934665603ULL;
    for (int i = 0; i < WORDS; i++)
        s = (s ^ data[i]) * 1099511628211ULL;
    return s;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "-") == 0) {
        uint64_t r = 0;
        for (int k = 2; k < argc; k++) {
            uint64_t rounds = strtoull(argv[k], NULL, 10);
            for (; r < rounds; r++)
                round_of(r);
            printf("rounds=%llu sum=%016llx\n", (unsigned long long)rounds,
                   (unsigned long long)checksum());
        }
        return 0;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: spin NAME | spin - ROUNDS\n");
        return 2;
    }
    char stop[4096];
    snprintf(stop, sizeof stop, "%s.stop", argv[1]);
    printf("ready\n");
    fflush(stdout);
    uint64_t r = 0;
    /* Looks for the stop file every 16 rounds: away from home, each look is a call forwarded
     * home. */
    while (r % 16 != 0 || access(stop, F_OK) != 0) {
        round_of(r);
        r++;
    }
    printf("rounds=%llu sum=%016llx\n", (unsigned long long)r, (unsigned long long)checksum());
    return 0;
}
