/* Computes with a CPU-time timer (ITIMER_PROF) firing every millisecond of its CPU time, as
 * a profiler does: it gets a signal all the time, wherever it runs, also while a move asks
 * it to stop. Each tick is counted by its handler; the computation is checked at the end.
 *
 * Usage: profiled STOPFILE. Prints "ready", computes until STOPFILE exists, then prints
 * "ticked sum=S" (S a known function of the rounds done) and exits 0. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static volatile sig_atomic_t ticks;

static void tick(int sig) {
    (void)sig;
    ticks++;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: profiled STOPFILE\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = tick;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGPROF, &sa, NULL);
    struct itimerval every = {{0, 1000}, {0, 1000}};
    setitimer(ITIMER_PROF, &every, NULL);
    printf("ready\n");
    fflush(stdout);
    uint64_t rounds = 0, sum = 0;
    while (access(argv[1], F_OK) != 0) {
        for (uint64_t i = 0; i < 100000; i++)
            sum += i ^ rounds;
        rounds++;
    }
    uint64_t expect = 0;
    for (uint64_t r = 0; r < rounds; r++)
        for (uint64_t i = 0; i < 100000; i++)
            expect += i ^ r;
    printf("%s sum=%s\n", ticks > 0 ? "ticked" : "no ticks", sum == expect ? "right" : "WRONG");
    return sum != expect || ticks == 0;
}
