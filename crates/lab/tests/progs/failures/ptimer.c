/* ptimer: a POSIX timer (timer_create, SIGEV_SIGNAL) sends SIGUSR1 every 2 ms with the value
 * 4242; its handler counts the ticks that come as the timer's (si_code SI_TIMER, si_value
 * 4242) and those that do not. Says "ready", runs until GOFILE exists (moves happen
 * meanwhile, and ticks arrive while it is frozen for them), then prints "ticks N bad M".
 * Exits 0. usage: ptimer GOFILE */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t good, bad;

static void on_tick(int sig, siginfo_t *info, void *context) {
    (void)sig;
    (void)context;
    if (info->si_code == SI_TIMER && info->si_value.sival_int == 4242)
        good++;
    else
        bad++;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: ptimer GOFILE\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_tick;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGUSR1, &sa, 0);
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = SIGUSR1;
    ev.sigev_value.sival_int = 4242;
    timer_t timer;
    if (timer_create(CLOCK_MONOTONIC, &ev, &timer) != 0) {
        perror("timer_create");
        return 1;
    }
    struct itimerspec every = {.it_interval = {.tv_nsec = 2000000}, .it_value = {.tv_nsec = 2000000}};
    timer_settime(timer, 0, &every, 0);
    printf("ready\n");
    fflush(stdout);
    while (access(argv[1], F_OK) != 0)
        usleep(5000);
    struct itimerspec off = {0};
    timer_settime(timer, 0, &off, 0);
    printf("ticks %d bad %d\n", (int)good, (int)bad);
    return 0;
}
