/* restart: a read of a pipe (its stdin) that a signal meets, as Linux answers it. Says
 * "ready"; on each line "check NAME" it reads on stdin, runs four reads, each announced with
 * "reading NAME KIND" before it blocks, and prints "NAME KIND ok" or "NAME KIND FAIL: why",
 * then "checked NAME". Ends on "end".
 *  - blocked-restart, blocked-norestart: the read runs inside SIGUSR1's handler (installed
 *    with and without SA_RESTART, with SIGUSR1 and SIGUSR2 blocked while it runs). The test
 *    sends SIGUSR1, which must not interrupt it, then "data": the read returns it, and the
 *    handler runs a second time once the first returns.
 *  - open-restart, open-norestart: the read runs in main with SIGUSR2 caught (with and
 *    without SA_RESTART). The test sends SIGUSR2; its handler says "usr2 NAME KIND". With
 *    SA_RESTART the read goes on and returns the "data" the test then sends; without, it
 *    fails with EINTR.
 * No read may ever return a kernel restart code (errno 512 to 516). usage: restart */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tour.h"

static volatile sig_atomic_t usr1_runs;
static ssize_t got;
static int got_errno;
static char usr2_says[256];

static void read_data(void) {
    char buf[64];
    got = read(0, buf, sizeof buf);
    got_errno = errno;
    if (got == 5 && memcmp(buf, "data\n", 5) != 0)
        got = -2;
}

static void on_usr1(int sig) {
    (void)sig;
    if (++usr1_runs == 1)
        read_data();
}

static void on_usr2(int sig) {
    (void)sig;
    if (write(1, usr2_says, strlen(usr2_says)) < 0)
        _exit(3);
}

static void catch(int sig, void (*handler)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR1);
    sigaddset(&sa.sa_mask, SIGUSR2);
    sigaction(sig, &sa, 0);
}

static void announce(const char *name, const char *kind) {
    snprintf(usr2_says, sizeof usr2_says, "usr2 %s %s\n", name, kind);
    printf("reading %s %s\n", name, kind);
    fflush(stdout);
}

/* The verdict on the read just made: `want` is 5 (the data) or -1 with EINTR. */
static void verdict(const char *name, const char *kind, ssize_t want) {
    if (got == -1 && got_errno >= 512 && got_errno <= 516)
        printf("%s %s FAIL: a restart code reached the program (errno %d)\n", name, kind,
               got_errno);
    else if (got != want || (want == -1 && got_errno != EINTR))
        printf("%s %s FAIL: read returned %zd (%s)\n", name, kind, got, strerror(got_errno));
    else
        printf("%s %s ok\n", name, kind);
}

static void blocked(const char *name, const char *kind, int flags) {
    catch(SIGUSR1, on_usr1, flags);
    usr1_runs = 0;
    announce(name, kind);
    /* Raised here, it runs its handler before raise returns, wherever the process runs. */
    raise(SIGUSR1);
    verdict(name, kind, 5);
    if (usr1_runs != 2)
        printf("%s %s FAIL: the handler ran %d times\n", name, kind, usr1_runs);
}

static void open_read(const char *name, const char *kind, int flags) {
    catch(SIGUSR2, on_usr2, flags);
    announce(name, kind);
    read_data();
    verdict(name, kind, flags & SA_RESTART ? 5 : -1);
}

int main(void) {
    char line[128];
    printf("ready\n");
    fflush(stdout);
    while (read_line(line, sizeof line) == 0) {
        if (strcmp(line, "end") == 0)
            return 0;
        const char *name = line + strlen("check ");
        blocked(name, "blocked-restart", SA_RESTART);
        blocked(name, "blocked-norestart", 0);
        open_read(name, "open-restart", SA_RESTART);
        open_read(name, "open-norestart", 0);
        printf("checked %s\n", name);
        fflush(stdout);
    }
    return 1;
}
