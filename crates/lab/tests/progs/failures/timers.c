/* timers: says "ready", waits until GOFILE exists (so that the timers are set wherever the
 * process then runs), then sets alarm(1) and waits for its handler, then a 300 ms
 * ITIMER_REAL and waits for it, then a 100 ms ITIMER_VIRTUAL (CPU time) and spins until it
 * fires, printing "alarm fired", "itimer fired" and "virtual timer fired"; a SIGUSR1 sent at
 * any time prints "got USR1". Exits 0. With "onstack", the SIGUSR1 handler has SA_ONSTACK,
 * as Python sets on all its handlers, with no alternate stack: the kernel then uses the normal
 * stack. usage: timers GOFILE [onstack] */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t alarms, usr1, vtalrms;

static void on_alarm(int sig) { (void)sig; alarms++; }
static void on_vtalrm(int sig) { (void)sig; vtalrms++; }
static void on_usr1(int sig) { (void)sig; usr1 = 1; }

static void report_usr1(void) {
    if (usr1) {
        usr1 = 0;
        printf("got USR1\n");
        fflush(stdout);
    }
}

/* Spins (no system calls but vdso clock reads) until `flag` reaches `want`, at most 20 s. */
static int spin_until(volatile sig_atomic_t *flag, int want) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (*flag < want) {
        report_usr1();
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > 20)
            return -1;
    }
    return 0;
}

/* Waits for `flag` to reach `want` and says "NAME fired", or "FAIL: no NAME". */
static int expect(volatile sig_atomic_t *flag, int want, const char *name) {
    if (spin_until(flag, want) != 0) {
        printf("FAIL: no %s\n", name);
        return 1;
    }
    printf("%s fired\n", name);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2 && !(argc == 3 && strcmp(argv[2], "onstack") == 0)) {
        fprintf(stderr, "usage: timers GOFILE [onstack]\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, 0);
    sa.sa_handler = on_vtalrm;
    sigaction(SIGVTALRM, &sa, 0);
    sa.sa_handler = on_usr1;
    if (argc == 3)
        sa.sa_flags = SA_ONSTACK;
    sigaction(SIGUSR1, &sa, 0);
    printf("ready\n");
    fflush(stdout);
    while (access(argv[1], F_OK) != 0) {
        report_usr1();
        usleep(20000);
    }
    alarm(1);
    if (expect(&alarms, 1, "alarm"))
        return 1;
    struct itimerval it = {.it_value = {.tv_usec = 300000}};
    setitimer(ITIMER_REAL, &it, 0);
    if (expect(&alarms, 2, "itimer"))
        return 1;
    struct itimerval cpu = {.it_value = {.tv_usec = 100000}};
    setitimer(ITIMER_VIRTUAL, &cpu, 0);
    return expect(&vtalrms, 1, "virtual timer");
}
