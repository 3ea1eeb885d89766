/* masked: the pselect and ppoll pattern. SIGUSR1 is blocked but during each wait, which is
 * on a pipe that never gets data, with a 20 s timeout. Says "ready", then for K = 1..4
 * (pselect for K = 1, 2; ppoll for 3, 4) says "waiting K" and waits: a SIGUSR1 sent at any
 * time must end the wait with EINTR after its handler ran, and leave SIGUSR1 blocked again.
 * Prints "K ok" or "K FAIL: why". Exits 0. usage: masked */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

static volatile sig_atomic_t handled;

static void on_usr1(int sig) {
    (void)sig;
    handled++;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, 0);
    sigset_t blocked, during;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGUSR1);
    sigprocmask(SIG_BLOCK, &blocked, 0);
    sigemptyset(&during);
    int fds[2];
    if (pipe(fds) != 0) {
        perror("pipe");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    for (int k = 1; k <= 4; k++) {
        int before = handled;
        printf("waiting %d\n", k);
        fflush(stdout);
        int ret;
        if (k <= 2) {
            fd_set reads;
            FD_ZERO(&reads);
            FD_SET(fds[0], &reads);
            struct timespec limit = {.tv_sec = 20};
            ret = pselect(fds[0] + 1, &reads, 0, 0, &limit, &during);
        } else {
            struct pollfd poll = {.fd = fds[0], .events = POLLIN};
            struct timespec limit = {.tv_sec = 20};
            ret = ppoll(&poll, 1, &limit, &during);
        }
        int err = errno;
        sigset_t now;
        sigprocmask(SIG_BLOCK, 0, &now);
        if (ret != -1 || err != EINTR)
            printf("%d FAIL: returned %d (%s)\n", k, ret, strerror(err));
        else if (handled != before + 1)
            printf("%d FAIL: the handler ran %d times\n", k, handled - before);
        else if (!sigismember(&now, SIGUSR1))
            printf("%d FAIL: SIGUSR1 is no longer blocked\n", k);
        else
            printf("%d ok\n", k);
        fflush(stdout);
    }
    return 0;
}
