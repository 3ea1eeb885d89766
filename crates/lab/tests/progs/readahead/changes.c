/* changes FILE CHANNEL: a file changes at home while this process, moved, holds bytes of
 * it, and it learns of the change through CHANNEL, something that goes home: "pipe" (a line
 * on stdin), "signal" (SIGUSR1) or "lock" (flock on FILE's own descriptor, which keeps the
 * bytes held; the writer holds the lock while it changes the file). What it reads afterwards must be the file as it is then.
 *
 * It reads 4 KiB at offset 0 with read() and 4 KiB at 512 KiB with pread() (both served from
 * bytes home lends), says "held", learns, then prints what pread at 512 KiB, the rest of the
 * file through read() and a fresh open of FILE give, counting the letters 'a' and 'b'. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static volatile sig_atomic_t got_usr1;

static void on_usr1(int sig) { (void)sig; got_usr1 = 1; }

/* One line of stdin, a byte at a time (stdin is a pipe: no read-ahead). */
static void line(void) {
    char c;
    while (read(0, &c, 1) == 1 && c != '\n')
        ;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* Reads FD to its end and prints how much, and how many 'a' and 'b'. */
static void count(const char *what, int fd) {
    char buf[4096];
    long total = 0, a = 0, b = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            a += buf[i] == 'a';
            b += buf[i] == 'b';
        }
        total += n;
    }
    if (n < 0)
        die("read");
    printf("%s %ld a=%ld b=%ld\n", what, total, a, b);
}

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    const char *file = argv[1], *channel = argv[2];
    struct sigaction sa = {.sa_handler = on_usr1};
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t usr1, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, &old);
    printf("ready\n");
    fflush(stdout);
    line(); /* the test moved us */

    int fd = open(file, O_RDONLY);
    if (fd < 0)
        die("open");
    char buf[4096];
    if (read(fd, buf, sizeof buf) != sizeof buf || buf[0] != 'a')
        die("first read");
    if (pread(fd, buf, sizeof buf, 512 << 10) != sizeof buf || buf[0] != 'a')
        die("first pread");
    printf("held\n");
    fflush(stdout);

    if (strcmp(channel, "pipe") == 0) {
        line();
    } else if (strcmp(channel, "signal") == 0) {
        while (!got_usr1)
            sigsuspend(&old);
    } else if (strcmp(channel, "lock") == 0) {
        if (flock(fd, LOCK_EX) != 0)
            die("flock");
    } else {
        return 2;
    }

    ssize_t p = pread(fd, buf, sizeof buf, 512 << 10);
    printf("pread %zd %c\n", p, p > 0 ? buf[0] : '-');
    count("read", fd);
    int again = open(file, O_RDONLY);
    if (again < 0)
        die("reopen");
    count("reopened", again);
    return 0;
}
