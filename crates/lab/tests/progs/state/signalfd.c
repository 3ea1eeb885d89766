/* signalfd: signals the program blocks stay its own at home while it is away. It blocks
 * SIGUSR1 and SIGUSR2, opens a signalfd for SIGUSR1 and catches SIGUSR2. Says "ready"; on
 * each line "check K@NODE" it says "waiting K@NODE" and reads the signalfd: the test sends
 * SIGUSR1 to its PID at home, and the read must return it. Then it says "holding K@NODE":
 * the test sends SIGUSR2 and, once it is pending, the line "go"; SIGUSR2 must show in
 * sigpending() and the mask sigprocmask reports, and its handler must have run when the
 * sigprocmask that unblocks it returns.
 * Prints "K@NODE ok" or "K@NODE FAIL: why", then "checked K@NODE". Ends on "end".
 * usage: signalfd */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "tour.h"

static volatile sig_atomic_t usr2_runs;

static void on_usr2(int sig) {
    (void)sig;
    usr2_runs++;
}

static sigset_t both, usr1, usr2;
static int sfd;

static const char *check(const char *name, char *why, size_t cap) {
    printf("waiting %s\n", name);
    fflush(stdout);
    struct signalfd_siginfo info;
    ssize_t n = read(sfd, &info, sizeof info);
    if (n != sizeof info) {
        snprintf(why, cap, "signalfd read returned %zd (%s)", n, strerror(errno));
        return why;
    }
    if (info.ssi_signo != SIGUSR1 || info.ssi_code != SI_USER || info.ssi_pid == 0) {
        snprintf(why, cap, "signalfd gave signal %u code %d from %u", info.ssi_signo,
                 info.ssi_code, info.ssi_pid);
        return why;
    }
    printf("holding %s\n", name);
    fflush(stdout);
    char line[64];
    if (read_line(line, sizeof line) != 0 || strcmp(line, "go") != 0)
        return "no go";
    sigset_t pending;
    sigpending(&pending);
    if (!sigismember(&pending, SIGUSR2) || sigismember(&pending, SIGUSR1)) {
        snprintf(why, cap, "sigpending: SIGUSR1 %d, SIGUSR2 %d", sigismember(&pending, SIGUSR1),
                 sigismember(&pending, SIGUSR2));
        return why;
    }
    sigset_t now;
    if (sigprocmask(SIG_BLOCK, 0, &now) != 0 || !sigismember(&now, SIGUSR1) ||
        !sigismember(&now, SIGUSR2)) {
        snprintf(why, cap, "sigprocmask does not show SIGUSR1 and SIGUSR2 blocked");
        return why;
    }
    int before = usr2_runs;
    sigprocmask(SIG_UNBLOCK, &usr2, 0);
    int after = usr2_runs;
    sigprocmask(SIG_BLOCK, &usr2, 0);
    if (after != before + 1) {
        snprintf(why, cap, "the SIGUSR2 handler ran %d times on unblocking", after - before);
        return why;
    }
    return 0;
}

int main(void) {
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    sigemptyset(&both);
    sigaddset(&both, SIGUSR1);
    sigaddset(&both, SIGUSR2);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, 0);
    sigprocmask(SIG_BLOCK, &both, 0);
    sfd = signalfd(-1, &usr1, 0);
    if (sfd < 0) {
        perror("signalfd");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    return tour(check, NULL);
}
