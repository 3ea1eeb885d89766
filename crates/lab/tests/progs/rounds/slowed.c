/* rmosix test guest: a job of two processes, for a move made while one of them is slowed down.
 *
 * Usage: slowed MIB
 * Forks a ticker, then maps MIB MiB, fills every page with words derived from (page, pass 0),
 * prints "ready", and rewrites all of it over and over, each pass with words of its own, as
 * the bench's rewrite.c does: before it rewrites a page it checks that the page's first and
 * last words hold the previous pass's, and prints "FAIL page=N" and exits 1 if not. So the
 * rounds can only catch up with it if it is slowed down, and a page a move left out shows
 * within a pass. On SIGUSR1 it prints "usr1 passes=P" (P the passes it began) after the page
 * it is at.
 *
 * The ticker raises SIGUSR2 on itself every 10 ms and prints "tick N" after each: under
 * mosrun each raise stops it for its tracer at home, which must serve it, so the ticks stop
 * if the home supervisor stops serving the job. It dies with its parent.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define WORDS (PAGE / sizeof(uint64_t))

static volatile sig_atomic_t usr1;

static void on_usr1(int sig) {
    (void)sig;
    usr1 = 1;
}

static void on_usr2(int sig) { (void)sig; }

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

static void tick(pid_t parent) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(0);
    signal(SIGUSR2, on_usr2);
    for (unsigned long n = 1;; n++) {
        struct timespec pause = {0, 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
        raise(SIGUSR2);
        printf("tick %lu\n", n);
        fflush(stdout);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: slowed MIB\n");
        return 2;
    }
    size_t pages = ((size_t)strtoul(argv[1], NULL, 10) << 20) / PAGE;
    if (pages == 0) {
        fprintf(stderr, "slowed: MIB must be at least 1\n");
        return 2;
    }
    pid_t parent = getpid();
    fflush(stdout);
    pid_t ticker = fork();
    if (ticker < 0) {
        perror("slowed: fork");
        return 1;
    }
    if (ticker == 0)
        tick(parent);
    uint64_t *mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("slowed: mmap");
        return 1;
    }
    for (size_t n = 0; n < pages; n++)
        for (size_t k = 0; k < WORDS; k++)
            mem[n * WORDS + k] = word(n, 0, k);
    signal(SIGUSR1, on_usr1);
    printf("ready\n");
    fflush(stdout);
    for (uint64_t pass = 1;; pass++) {
        for (size_t n = 0; n < pages; n++) {
            uint64_t *page = mem + n * WORDS;
            if (page[0] != word(n, pass - 1, 0) || page[WORDS - 1] != word(n, pass - 1, WORDS - 1)) {
                printf("FAIL page=%zu\n", n);
                fflush(stdout);
                exit(1);
            }
            for (size_t k = 0; k < WORDS; k++)
                page[k] = word(n, pass, k);
            if (usr1) {
                usr1 = 0;
                printf("usr1 passes=%llu\n", (unsigned long long)pass);
                fflush(stdout);
            }
        }
    }
}
