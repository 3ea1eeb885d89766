/* Grows one anonymous area without a pause, as a program appending to a growing array with
 * realloc does: every millisecond, mremap without MREMAP_MAYMOVE extends the whole area by
 * 32 KiB, and the new part is filled; every fourth step the area is unmapped and mapped anew
 * at the same address, one step longer, and filled again. Whatever a move does while it
 * reads the area (write tracking, running rounds, the final round's new tail), the program
 * must find it one mapping, as it made it: an mremap of the whole fails with EFAULT when it
 * spans two. The content is checked every 64 steps. Between steps the program rewrites
 * another 64 MiB without a pause, so that a move needs several running rounds.
 *
 * Usage: grower STOPFILE. Prints "ready", grows until STOPFILE exists, checks the area,
 * prints "grown=N fail=0" and exits 0 (1 after a failure). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define STEP (32UL << 10)
#define FIRST (8UL << 20)
/* Room left free above the area; once it is filled, the area starts small again. */
#define ROOM (1UL << 30)
#define WORD sizeof(uint64_t)
#define HOT (64UL << 20)

static uint64_t *base;
static size_t len;
static uint64_t gen = 1;
static long fails;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static uint64_t expect(size_t i) { return (gen * 0x9E3779B97F4A7C15ULL) ^ (i * 0xD1B54A32D192ED03ULL); }

static void fill(size_t from, size_t to) {
    for (size_t i = from / WORD; i < to / WORD; i++)
        base[i] = expect(i);
}

static void check(const char *when) {
    for (size_t i = 0; i < len / WORD; i++) {
        if (base[i] != expect(i)) {
            printf("FAIL word %zu of %zu (%s): %#lx, not %#lx\n", i, len / WORD, when,
                   (unsigned long)base[i], (unsigned long)expect(i));
            fflush(stdout);
            fails++;
            return;
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: grower STOPFILE\n");
        return 2;
    }
    /* Reserve the room and give it back: nothing else is mapped above the area then, since
     * this program maps nothing else while it runs. */
    void *room = mmap(NULL, ROOM, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (room == MAP_FAILED || munmap(room, ROOM) != 0) {
        perror("reserve");
        return 2;
    }
    base = mmap(room, FIRST, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (base == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    len = FIRST;
    fill(0, len);
    char *hot = mmap(NULL, HOT, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (hot == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    size_t hot_at = 0;
    printf("ready\n");
    fflush(stdout);
    long grown = 0;
    double next_step = now();
    while (access(argv[1], F_OK) != 0) {
        while (now() < next_step) {
            memset(hot + hot_at, (int)grown, 1 << 20);
            hot_at = (hot_at + (1 << 20)) % HOT;
        }
        next_step = now() + 0.001;
        if (len + STEP > ROOM / 2) {
            if (mremap(base, len, FIRST, 0) == MAP_FAILED) {
                printf("FAIL mremap shrink: %s\n", strerror(errno));
                return 1;
            }
            len = FIRST;
        }
        if (grown % 4 == 3) {
            /* Anew, at the same address: the move finds an area of the same start it does
             * not track, longer than the one it first read. */
            if (munmap(base, len) != 0 ||
                mmap(base, len + STEP, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != base) {
                printf("FAIL map anew: %s\n", strerror(errno));
                return 1;
            }
            gen++;
            fill(0, len + STEP);
        } else {
            if (mremap(base, len, len + STEP, 0) == MAP_FAILED) {
                printf("FAIL mremap grow %zu bytes to %zu: %s\n", len, len + STEP, strerror(errno));
                return 1;
            }
            fill(len, len + STEP);
        }
        len += STEP;
        if (++grown % 64 == 0)
            check("every 64 steps");
    }
    check("at the end");
    printf("grown=%ld fail=%ld\n", grown, fails);
    return fails != 0;
}
