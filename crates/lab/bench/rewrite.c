/* rmosix bench and test guest: a process that keeps rewriting its memory.
 *
 * Usage: rewrite MIB WRITE_MIB
 * Maps MIB MiB and fills every page with words derived from (page, pass 0), prints "ready",
 * then rewrites the first WRITE_MIB MiB over and over, page after page, each pass with words
 * of its own (page, pass). So no page is zero, no two pages or passes are alike, and a page
 * left out of a move shows: before it rewrites a page, it checks the page's first and last
 * words hold the previous pass's tag; a mismatch prints "FAIL page=N" and exits 1.
 *
 * It reads CLOCK_MONOTONIC (vdso, no system call) between pages and keeps the longest gap
 * between two reads: time it did not run (frozen or slowed for a migration, or descheduled).
 * It makes no system call until SIGUSR1, so no forwarded call of its own can hold it up
 * during a move (a guest serves none while it sends the running rounds). On SIGUSR1 it
 * checks every word of every page and prints "checked pages=N passes=P stall_ms=X", X the
 * longest gap since the last such line (the check and the printing not counted).
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096
#define WORDS (PAGE / sizeof(uint64_t))

static volatile sig_atomic_t check_asked;

static void ask_check(int sig) {
    (void)sig;
    check_asked = 1;
}

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Word k of page n in pass p: never zero. */
static uint64_t word(size_t n, uint64_t p, size_t k) {
    return splitmix64(((uint64_t)n << 20) ^ (p << 44) ^ k) | 1;
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void fail(size_t n) {
    printf("FAIL page=%zu\n", n);
    fflush(stdout);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: rewrite MIB WRITE_MIB\n");
        return 2;
    }
    size_t pages = ((size_t)strtoul(argv[1], NULL, 10) << 20) / PAGE;
    size_t written = ((size_t)strtoul(argv[2], NULL, 10) << 20) / PAGE;
    if (written > pages || written == 0) {
        fprintf(stderr, "rewrite: WRITE_MIB must be between 1 and MIB\n");
        return 2;
    }
    uint64_t *mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("rewrite: mmap");
        return 1;
    }
    for (size_t n = 0; n < pages; n++)
        for (size_t k = 0; k < WORDS; k++)
            mem[n * WORDS + k] = word(n, 0, k);
    signal(SIGUSR1, ask_check);
    printf("ready\n");
    fflush(stdout);
    long long last = now_ns(), longest = 0;
    for (uint64_t pass = 1;; pass++) {
        for (size_t n = 0; n < written; n++) {
            uint64_t *page = mem + n * WORDS;
            if (page[0] != word(n, pass - 1, 0) || page[WORDS - 1] != word(n, pass - 1, WORDS - 1))
                fail(n);
            for (size_t k = 0; k < WORDS; k++)
                page[k] = word(n, pass, k);
            long long t = now_ns();
            if (t - last > longest)
                longest = t - last;
            last = t;
            if (check_asked) {
                /* Pages up to n hold this pass, the rest of the rewritten ones the last. */
                for (size_t m = 0; m < pages; m++) {
                    uint64_t p = m >= written ? 0 : m <= n ? pass : pass - 1;
                    for (size_t k = 0; k < WORDS; k++)
                        if (mem[m * WORDS + k] != word(m, p, k))
                            fail(m);
                }
                check_asked = 0;
                printf("checked pages=%zu passes=%llu stall_ms=%.3f\n", pages,
                       (unsigned long long)pass, (double)longest / 1e6);
                fflush(stdout);
                longest = 0;
                last = now_ns();
            }
        }
    }
}
