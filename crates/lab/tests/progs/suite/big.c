/* A process with more than a GiB of memory, moved while it reads it.
 *
 * Usage: big MIB. Fills MIB mebibytes with a pattern computed from each word's position,
 * prints "filled", then runs three rounds: round K prints "computing K", checks every word
 * and prints PASS or FAIL, then reads one line from stdin (the test moves the program
 * during the check and sends the line once the move is done). Prints a checksum of the
 * whole area at the end; exit 0 if every round passed, 1 if not.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* splitmix64 of the word's index: no zero pages, nothing that compresses. */
static uint64_t pattern(uint64_t i) {
    uint64_t z = i + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void gate(void) {
    char c;
    do {
        if (read(0, &c, 1) != 1) {
            printf("FAIL: gate\n");
            exit(1);
        }
    } while (c != '\n');
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: big MIB\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    size_t words = (size_t)strtoul(argv[1], NULL, 10) << 17;
    uint64_t *area = mmap(NULL, words * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    for (size_t i = 0; i < words; i++)
        area[i] = pattern(i);
    printf("filled\n");
    int failures = 0;
    for (int round = 1; round <= 3; round++) {
        printf("computing %d\n", round);
        size_t bad = 0;
        for (size_t i = 0; i < words; i++)
            bad += area[i] != pattern(i);
        printf("round %d: %s\n", round, bad ? "FAIL" : "PASS");
        failures += bad != 0;
        gate();
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < words; i++)
        sum = sum * 31 + area[i];
    printf("checksum %016llx\n", (unsigned long long)sum);
    return failures ? 1 : 0;
}
