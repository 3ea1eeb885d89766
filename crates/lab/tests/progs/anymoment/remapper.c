/* Never stops reshaping its memory: maps areas and fills them, unmaps them, grows, shrinks
 * and moves them with mremap, and zaps parts with madvise(MADV_DONTNEED), as a numpy program
 * that allocates and frees big arrays does (some areas ask for huge pages, as numpy's do).
 * It knows what each area must hold (a pattern of the slot and its generation, zeros where
 * it zapped) and checks one area after each step and all of them every 64 steps: a page a
 * move lost, kept stale or placed at the wrong address shows as "FAIL".
 *
 * Usage: remapper STOPFILE. Prints "ready", reshapes until STOPFILE exists, checks every
 * area, prints "steps=N fail=0" and exits 0 (1 after a failure). */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SLOTS 8
#define MIB (1UL << 20)
#define WORD sizeof(uint64_t)

struct slot {
    uint64_t *base; /* NULL: empty */
    size_t len;     /* bytes */
    uint64_t gen;
    size_t zap_from, zap_to; /* word range read as zeros */
};

static struct slot slots[SLOTS];
static uint64_t rng = 88172645463325252ULL;
static uint64_t gens;
static long fails;

static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static uint64_t expect(const struct slot *s, size_t i) {
    if (i >= s->zap_from && i < s->zap_to)
        return 0;
    return (s->gen * 0x9E3779B97F4A7C15ULL) ^ (i * 0xD1B54A32D192ED03ULL) ^ 1;
}

static void fill(struct slot *s, size_t from, size_t to) {
    for (size_t i = from; i < to; i++)
        s->base[i] = expect(s, i);
}

static void check(int n, const char *when) {
    struct slot *s = &slots[n];
    if (!s->base)
        return;
    for (size_t i = 0; i < s->len / WORD; i++) {
        if (s->base[i] != expect(s, i)) {
            printf("FAIL slot %d word %zu (%s): %#lx, not %#lx\n", n, i, when,
                   (unsigned long)s->base[i], (unsigned long)expect(s, i));
            fflush(stdout);
            fails++;
            return;
        }
    }
}

static size_t some_len(void) { return (1 + next() % 8) * MIB; }

static void step(void) {
    int n = next() % SLOTS;
    struct slot *s = &slots[n];
    if (!s->base) {
        s->len = some_len();
        s->base = mmap(NULL, s->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (s->base == MAP_FAILED) {
            perror("mmap");
            exit(2);
        }
        if (next() % 2)
            madvise(s->base, s->len, MADV_HUGEPAGE);
        s->gen = ++gens;
        s->zap_from = s->zap_to = 0;
        fill(s, 0, s->len / WORD);
        return;
    }
    switch (next() % 5) {
    case 0: /* unmap */
        munmap(s->base, s->len);
        s->base = NULL;
        break;
    case 1: { /* grow, maybe moving */
        size_t len = s->len + some_len();
        void *p = mremap(s->base, s->len, len, MREMAP_MAYMOVE);
        if (p == MAP_FAILED) {
            perror("mremap grow");
            exit(2);
        }
        size_t old = s->len / WORD;
        s->base = p;
        s->len = len;
        fill(s, old, len / WORD);
        break;
    }
    case 2: { /* shrink in place */
        size_t len = s->len / 2 & ~(MIB - 1);
        if (len == 0)
            break;
        if (mremap(s->base, s->len, len, 0) == MAP_FAILED) {
            perror("mremap shrink");
            exit(2);
        }
        s->len = len;
        if (s->zap_to > len / WORD)
            s->zap_to = len / WORD;
        if (s->zap_from > s->zap_to)
            s->zap_from = s->zap_to;
        break;
    }
    case 3: { /* move elsewhere: reserve a new place, then move onto it */
        void *to = mmap(NULL, s->len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        void *p = mremap(s->base, s->len, s->len, MREMAP_MAYMOVE | MREMAP_FIXED, to);
        if (to == MAP_FAILED || p == MAP_FAILED) {
            perror("mremap move");
            exit(2);
        }
        s->base = p;
        break;
    }
    case 4: { /* zap a page-aligned part (the old zapped part is written again first) */
        size_t was_from = s->zap_from, was_to = s->zap_to;
        s->zap_from = s->zap_to = 0;
        fill(s, was_from, was_to);
        size_t pages = s->len / 4096;
        size_t from = next() % pages, to = from + 1 + next() % (pages - from);
        madvise((char *)s->base + from * 4096, (to - from) * 4096, MADV_DONTNEED);
        s->zap_from = from * 4096 / WORD;
        s->zap_to = to * 4096 / WORD;
        break;
    }
    }
    check(n, "after a step");
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: remapper STOPFILE\n");
        return 2;
    }
    printf("ready\n");
    fflush(stdout);
    long steps = 0;
    while (access(argv[1], F_OK) != 0) {
        step();
        if (++steps % 64 == 0)
            for (int n = 0; n < SLOTS; n++)
                check(n, "every 64 steps");
    }
    for (int n = 0; n < SLOTS; n++)
        check(n, "at the end");
    printf("steps=%ld fail=%ld\n", steps, fails);
    return fails != 0;
}
