/*
 * Looks up one system path as the test says, through words of its own memory that the test
 * reads and writes by /proc/PID/mem where it runs, so that nothing of the conversation needs
 * its home (see tests/dfsa.rs):
 *
 *   lookups PATH   prints "ready ASKED COMMAND ANSWERED ANSWER" (addresses), then:
 *
 * whenever the test writes a command to COMMAND and a new number to ASKED, runs it, writes
 * its answer to ANSWER and the number to ANSWERED:
 *
 *   stat     -> size N   | err ERRNO   (stat of PATH)
 *   missing  -> fd N     | err ERRNO   (open of PATH.missing, read-only)
 *   append   -> appended | err ERRNO   (one line appended to PATH)
 *   stat P   -> size N   | err ERRNO   (stat of P)
 *   cat      -> fd N bytes B | err ERRNO (open of PATH, read-only, read to its end, closed)
 *   open     -> fd N     | err ERRNO   (open of PATH, read-only, held)
 *   read     -> bytes B  | err ERRNO   (the held file read to its end)
 *   close    -> closed   | err ERRNO   (the held file closed)
 *   exec     -> runs itself anew (the same process, a new program), answering nothing:
 *               the new program prints its own "ready" line
 *   end      -> exit 0, answering nothing
 *
 * and changes of a tree by path, each answered "ok" or "err ERRNO":
 *
 *   mkdir P | rmdir P | unlink P | rename A B | link A B | symlink TARGET P
 *   chmod OCTAL P | chown P (to the ids it had: -1) | truncate LEN P | utime P (to 1e9 s)
 *
 * Between commands it sleeps, which needs no home either.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile int asked, answered;
static char command[512], answer[128];
static char buf[1 << 16];

/* Reads fd to its end: the bytes read, or -1 with errno set. */
static long long drain(int fd) {
    long long total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            return n < 0 ? -1 : total;
        total += n;
    }
}

/* Runs a change of a tree: 0 if done; -1 with errno set if it failed, with errno 0 if it
 * is no such command. */
static int change(char *line) {
    char *op = strtok(line, " "), *a = strtok(NULL, " "), *b = strtok(NULL, " ");
    errno = 0;
    if (!op || !a)
        return -1;
    if (strcmp(op, "mkdir") == 0)
        return mkdir(a, 0755);
    if (strcmp(op, "rmdir") == 0)
        return rmdir(a);
    if (strcmp(op, "unlink") == 0)
        return unlink(a);
    if (strcmp(op, "chown") == 0)
        return chown(a, (uid_t)-1, (gid_t)-1);
    if (strcmp(op, "utime") == 0) {
        const struct timespec times[2] = {{1000000000, 0}, {1000000000, 0}};
        return utimensat(AT_FDCWD, a, times, 0);
    }
    if (!b)
        return -1;
    if (strcmp(op, "rename") == 0)
        return rename(a, b);
    if (strcmp(op, "link") == 0)
        return link(a, b);
    if (strcmp(op, "symlink") == 0)
        return symlink(a, b);
    if (strcmp(op, "chmod") == 0)
        return chmod(b, (mode_t)strtol(a, NULL, 8));
    if (strcmp(op, "truncate") == 0)
        return truncate(b, atol(a));
    return -1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: lookups PATH\n");
        return 2;
    }
    const char *path = argv[1];
    char missing[4096];
    snprintf(missing, sizeof missing, "%s.missing", path);
    printf("ready %p %p %p %p\n", (void *)&asked, (void *)command, (void *)&answered,
           (void *)answer);
    fflush(stdout);
    const struct timespec tick = {0, 1000 * 1000};
    int held = -1;
    for (int n = 0;;) {
        while (asked == n)
            nanosleep(&tick, NULL);
        n = asked;
        __sync_synchronize();
        struct stat st;
        int fd;
        if (strcmp(command, "stat") == 0) {
            if (stat(path, &st) == 0)
                snprintf(answer, sizeof answer, "size %lld", (long long)st.st_size);
            else
                snprintf(answer, sizeof answer, "err %d", errno);
        } else if (strncmp(command, "stat ", 5) == 0) {
            if (stat(command + 5, &st) == 0)
                snprintf(answer, sizeof answer, "size %lld", (long long)st.st_size);
            else
                snprintf(answer, sizeof answer, "err %d", errno);
        } else if (strcmp(command, "missing") == 0) {
            fd = open(missing, O_RDONLY | O_CLOEXEC);
            if (fd >= 0) {
                snprintf(answer, sizeof answer, "fd %d", fd);
                close(fd);
            } else {
                snprintf(answer, sizeof answer, "err %d", errno);
            }
        } else if (strcmp(command, "cat") == 0) {
            long long bytes = -1;
            fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd >= 0 && (bytes = drain(fd)) >= 0 && close(fd) == 0)
                snprintf(answer, sizeof answer, "fd %d bytes %lld", fd, bytes);
            else
                snprintf(answer, sizeof answer, "err %d", errno);
        } else if (strcmp(command, "open") == 0) {
            held = open(path, O_RDONLY | O_CLOEXEC);
            if (held >= 0)
                snprintf(answer, sizeof answer, "fd %d", held);
            else
                snprintf(answer, sizeof answer, "err %d", errno);
        } else if (strcmp(command, "read") == 0) {
            long long bytes = drain(held);
            if (bytes >= 0)
                snprintf(answer, sizeof answer, "bytes %lld", bytes);
            else
                snprintf(answer, sizeof answer, "err %d", errno);
        } else if (strcmp(command, "close") == 0) {
            if (close(held) == 0)
                snprintf(answer, sizeof answer, "closed");
            else
                snprintf(answer, sizeof answer, "err %d", errno);
            held = -1;
        } else if (strcmp(command, "append") == 0) {
            fd = open(path, O_WRONLY | O_APPEND);
            if (fd >= 0 && write(fd, "x\n", 2) == 2 && close(fd) == 0)
                snprintf(answer, sizeof answer, "appended");
            else
                snprintf(answer, sizeof answer, "err %d", errno);
        } else if (strcmp(command, "exec") == 0) {
            execv(argv[0], argv); /* the path it was run by: its name stays */
            snprintf(answer, sizeof answer, "err %d", errno);
        } else if (strcmp(command, "end") == 0) {
            return 0;
        } else if (change(command) == 0) {
            snprintf(answer, sizeof answer, "ok");
        } else if (errno != 0) {
            snprintf(answer, sizeof answer, "err %d", errno);
        } else {
            snprintf(answer, sizeof answer, "unknown %.32s", command);
        }
        __sync_synchronize();
        answered = n;
    }
}
