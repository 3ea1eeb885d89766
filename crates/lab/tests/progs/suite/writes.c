/* Forwarded writes under a ticking timer.
 *
 * Usage: writes N. SIGALRM every millisecond from setitimer(ITIMER_REAL), handled with
 * SA_RESTART; prints "ready", waits for a line on stdin (the test moves the program first),
 * then writes "line 1" to "line N" to stdout, one write(2) each. Every line must come out
 * exactly once, in order. A failed read of stdin prints FAIL, and the writes still follow;
 * the exit status is then 1.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static volatile sig_atomic_t ticks;

static void on_alarm(int sig) {
    (void)sig;
    ticks++;
}

int main(int argc, char **argv) {
    int lines = argc > 1 ? atoi(argv[1]) : 2000;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    struct itimerval every = {{0, 1000}, {0, 1000}};
    if (sigaction(SIGALRM, &sa, NULL) != 0 || setitimer(ITIMER_REAL, &every, NULL) != 0) {
        perror("timer");
        return 2;
    }
    if (write(1, "ready\n", 6) != 6)
        return 2;
    int failed = 0;
    char c;
    do {
        ssize_t got = read(0, &c, 1);
        if (got != 1) {
            /* Said, and the writes go on: they show the other half of the story. */
            printf("FAIL: read from stdin returned %zd (%s)\n", got,
                   got < 0 ? strerror(errno) : "end of file");
            fflush(stdout);
            failed = 1;
            break;
        }
    } while (c != '\n');
    for (int i = 1; i <= lines; i++) {
        char buf[32];
        int n = snprintf(buf, sizeof buf, "line %d\n", i);
        if (write(1, buf, n) != n) {
            perror("write");
            return 1;
        }
    }
    return failed;
}
