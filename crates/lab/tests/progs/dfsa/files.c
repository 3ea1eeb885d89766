/*
 * Opens, reads, stats and closes files as the test says, one command a line on stdin, each
 * answered with one line that starts with the command's tag (see tests/dfsa.rs):
 *
 *   TAG open PATH     -> TAG fd N          | TAG err ERRNO
 *   TAG openx PATH    -> the same, opened close-on-exec
 *   TAG read FD LEN   -> TAG read N sum S  (S: FNV-1a of the bytes read, in a loop to LEN or EOF)
 *   TAG pos FD        -> TAG pos N
 *   TAG stat PATH     -> TAG size N        | TAG err ERRNO
 *   TAG close FD      -> TAG closed 0      | TAG err ERRNO
 *   TAG dup FD        -> TAG fd N          | TAG err ERRNO
 *   TAG dup2 FD TO    -> TAG fd N          | TAG err ERRNO
 *   TAG dup3 FD TO    -> TAG fd N          | TAG err ERRNO  (close-on-exec)
 *   TAG dupfd FD MIN  -> TAG fd N          | TAG err ERRNO  (fcntl F_DUPFD)
 *   TAG dupfdx FD MIN -> TAG fd N          | TAG err ERRNO  (fcntl F_DUPFD_CLOEXEC)
 *   TAG cloexec FD    -> TAG cloexec 0|1   | TAG err ERRNO
 *   TAG create PATH   -> TAG fd N          | TAG err ERRNO  (O_CREAT|O_WRONLY|O_TRUNC, 0666)
 *   TAG umask OCTAL   -> TAG umask OLD
 *   end               -> exit 0
 */
#define _GNU_SOURCE /* dup3 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../state/tour.h" /* read_line */

static void cmd_read(const char *tag, int fd, long want) {
    static char buf[1 << 16];
    uint64_t sum = 0xcbf29ce484222325ULL;
    long got = 0;
    while (got < want) {
        size_t ask = (size_t)(want - got) < sizeof buf ? (size_t)(want - got) : sizeof buf;
        ssize_t n = read(fd, buf, ask);
        if (n < 0) {
            printf("%s err %d\n", tag, errno);
            return;
        }
        if (n == 0)
            break;
        for (ssize_t i = 0; i < n; i++) {
            sum ^= (unsigned char)buf[i];
            sum *= 0x100000001b3ULL;
        }
        got += n;
    }
    printf("%s read %ld sum %llu\n", tag, got, (unsigned long long)sum);
}

int main(void) {
    char line[4200], tag[32], op[16], arg[4096];
    printf("ready\n");
    fflush(stdout);
    while (read_line(line, sizeof line) == 0) {
        if (strcmp(line, "end") == 0)
            return 0;
        long len = 0;
        int fields = sscanf(line, "%31s %15s %4095s %ld", tag, op, arg, &len);
        if (fields < 3) {
            printf("bad command: %s\n", line);
        } else if (strcmp(op, "open") == 0 || strcmp(op, "openx") == 0) {
            int fd = open(arg, O_RDONLY | (strcmp(op, "openx") == 0 ? O_CLOEXEC : 0));
            if (fd < 0)
                printf("%s err %d\n", tag, errno);
            else
                printf("%s fd %d\n", tag, fd);
        } else if (strcmp(op, "read") == 0) {
            cmd_read(tag, atoi(arg), len);
        } else if (strcmp(op, "pos") == 0) {
            printf("%s pos %lld\n", tag, (long long)lseek(atoi(arg), 0, SEEK_CUR));
        } else if (strcmp(op, "stat") == 0) {
            struct stat st;
            if (stat(arg, &st) != 0)
                printf("%s err %d\n", tag, errno);
            else
                printf("%s size %lld\n", tag, (long long)st.st_size);
        } else if (strcmp(op, "create") == 0) {
            int fd = open(arg, O_CREAT | O_WRONLY | O_TRUNC, 0666);
            if (fd < 0)
                printf("%s err %d\n", tag, errno);
            else
                printf("%s fd %d\n", tag, fd);
        } else if (strcmp(op, "umask") == 0) {
            printf("%s umask %o\n", tag, umask((mode_t)strtol(arg, NULL, 8)));
        } else if (strcmp(op, "dup") == 0) {
            int fd = dup(atoi(arg));
            if (fd < 0)
                printf("%s err %d\n", tag, errno);
            else
                printf("%s fd %d\n", tag, fd);
        } else if (strncmp(op, "dup", 3) == 0) {
            int from = atoi(arg), to = (int)len, fd = -1;
            if (strcmp(op, "dup2") == 0)
                fd = dup2(from, to);
            else if (strcmp(op, "dup3") == 0)
                fd = dup3(from, to, O_CLOEXEC);
            else if (strcmp(op, "dupfd") == 0)
                fd = fcntl(from, F_DUPFD, to);
            else if (strcmp(op, "dupfdx") == 0)
                fd = fcntl(from, F_DUPFD_CLOEXEC, to);
            else
                errno = EINVAL;
            if (fd < 0)
                printf("%s err %d\n", tag, errno);
            else
                printf("%s fd %d\n", tag, fd);
        } else if (strcmp(op, "cloexec") == 0) {
            int flags = fcntl(atoi(arg), F_GETFD);
            if (flags < 0)
                printf("%s err %d\n", tag, errno);
            else
                printf("%s cloexec %d\n", tag, (flags & FD_CLOEXEC) != 0);
        } else if (strcmp(op, "lock") == 0) {
            /* A read lock on the whole file. */
            struct flock lock = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
            if (fcntl(atoi(arg), F_SETLK, &lock) != 0)
                printf("%s err %d\n", tag, errno);
            else
                printf("%s locked 0\n", tag);
        } else if (strcmp(op, "close") == 0) {
            if (close(atoi(arg)) != 0)
                printf("%s err %d\n", tag, errno);
            else
                printf("%s closed 0\n", tag);
        } else {
            printf("bad command: %s\n", line);
        }
        fflush(stdout);
    }
    return 1;
}
