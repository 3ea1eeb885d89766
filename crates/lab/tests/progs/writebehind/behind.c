/* Writes that a remote writes behind, and how they end.
 *
 * Every mode prints "ready" and reads one line from stdin before it starts, so that the
 * test can move it first. Modes:
 *
 *   stream N        N records of 4 KiB to stdout, each write its own, then exit.
 *   quiet FIFO      "x" then three writes of 1000 bytes to FIFO; then no system call that
 *                   goes home until SIGUSR1 (a sleep at the remote runs there), then exit.
 *   prof FIFO MARK  "x" then three writes of 1000 bytes to FIFO; a CPU-time timer's signal
 *                   (which the remote's own kernel sends) runs a handler that creates MARK.
 *   epipe FIFO      writes to FIFO, prints "opened", reads a line (the test closes the
 *                   reader first), then writes with SIGPIPE ignored (EPIPE), and with
 *                   SIGPIPE's default action (it dies of it).
 *   eagain FIFO     writes 1000-byte pieces to FIFO, non-blocking, until EAGAIN; prints how
 *                   many bytes went.
 *   stuck FIFO      the FIFO as descriptors 3 and 4: one byte to each, then 65534 bytes to 3,
 *                   which fill the pipe, then 3000 bytes to 4, which cannot go in; then it
 *                   sleeps at the remote until SIGUSR1.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t flag;
static const char *mark;

static void on_usr1(int sig) { (void)sig; flag = 1; }

static void on_prof(int sig) {
    (void)sig;
    int fd = open(mark, O_CREAT | O_WRONLY, 0644);
    if (fd >= 0) close(fd);
    flag = 1;
}

static void die(const char *what) { perror(what); exit(2); }

static void write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) die("write");
        buf += n;
        len -= (size_t)n;
    }
}

/* Sleep at the remote (nanosleep runs there) until `flag` is set. */
static void idle_until_flag(void) {
    struct timespec tick = {0, 1000000};
    while (!flag) nanosleep(&tick, NULL);
}

static void three_pieces(int fd) {
    char piece[1000];
    write_all(fd, "x", 1);
    for (int i = 0; i < 3; i++) {
        memset(piece, 'a' + i, sizeof piece);
        write_all(fd, piece, sizeof piece);
    }
}

static int open_fifo(const char *path, int flags) {
    int fd = open(path, O_WRONLY | flags);
    if (fd < 0) die("open fifo");
    return fd;
}

static void try_write(int fd, const char *what) {
    ssize_t n = write(fd, "more", 4);
    printf("%s: %s\n", what, n < 0 ? strerror(errno) : "wrote");
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *mode = argv[1];
    char line[64];
    signal(SIGUSR1, on_usr1);
    printf("ready\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) return 2;

    if (!strcmp(mode, "stream") && argc == 3) {
        long n = atol(argv[2]);
        static char record[4096];
        for (long i = 0; i < n; i++) {
            memset(record, 'A' + i % 26, sizeof record);
            snprintf(record, 32, "record %ld\n", i);
            write_all(1, record, sizeof record);
        }
        return 0;
    }
    if (!strcmp(mode, "quiet") && argc == 3) {
        three_pieces(open_fifo(argv[2], 0));
        idle_until_flag();
        return 0;
    }
    if (!strcmp(mode, "prof") && argc == 4) {
        mark = argv[3];
        int fd = open_fifo(argv[2], 0);
        signal(SIGPROF, on_prof);
        struct itimerval every = {{0, 1000}, {0, 1000}};
        three_pieces(fd);
        setitimer(ITIMER_PROF, &every, NULL);
        while (!flag) {
        }
        return 0;
    }
    if (!strcmp(mode, "epipe") && argc == 3) {
        int fd = open_fifo(argv[2], 0);
        three_pieces(fd);
        printf("opened\n");
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin)) return 2;
        signal(SIGPIPE, SIG_IGN);
        try_write(fd, "ignored");
        try_write(fd, "ignored again");
        signal(SIGPIPE, SIG_DFL);
        try_write(fd, "default");
        return 0;
    }
    if (!strcmp(mode, "eagain") && argc == 3) {
        int fd = open_fifo(argv[2], O_NONBLOCK);
        char piece[1000];
        long total = 0;
        memset(piece, 'e', sizeof piece);
        for (;;) {
            ssize_t n = write(fd, piece, sizeof piece);
            if (n < 0) {
                printf("wrote %ld, then %s\n", total, strerror(errno));
                return 0;
            }
            total += n;
        }
    }
    if (!strcmp(mode, "stuck") && argc == 3) {
        int fd = open_fifo(argv[2], 0);
        if (dup2(fd, 3) != 3 || dup2(fd, 4) != 4) die("dup2");
        static char fill[65534], rest[3000];
        write_all(3, "1", 1);
        write_all(4, "2", 1);
        /* One write: its first 4094 bytes fill the page the two bytes are in, the rest
           the other 15 pages of the pipe (pipe(7): 16 pages by default). */
        write_all(3, fill, sizeof fill);
        write_all(4, rest, sizeof rest);
        idle_until_flag();
        return 0;
    }
    fprintf(stderr, "usage: behind stream N | quiet FIFO | prof FIFO MARK | epipe FIFO | "
                    "eagain FIFO | stuck FIFO\n");
    return 2;
}
