/* headers DIR N STOPFILE: reads DIR/0 .. DIR/N-1 over and over as a compiler reads its
 * headers (open, fstat, read to the end, close) until STOPFILE exists, checking everything
 * as it goes: the size fstat gives is the file's (file i holds 100 + 997 i bytes), every
 * byte is the one the test wrote (byte k of file i is (7 i + k) % 251), each open gets the
 * number the last close freed, and every 16th round a read of the descriptor just closed
 * fails with EBADF. Then it prints "rounds=R bad=B", B counting what was not so. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static long bad;

static void check(int ok, const char *what, int file) {
    if (!ok) {
        bad++;
        fprintf(stderr, "headers: %s (file %d)\n", what, file);
    }
}

/* One file read whole: its descriptor, which the caller closes. */
static int read_one(const char *dir, int i) {
    char path[4096], buf[1500];
    snprintf(path, sizeof path, "%s/%d", dir, i);
    int fd = open(path, O_RDONLY | O_NOCTTY);
    if (fd < 0) {
        perror(path);
        exit(1);
    }
    struct stat st;
    check(fstat(fd, &st) == 0 && st.st_size == 100 + 997L * i, "fstat", i);
    long at = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t k = 0; k < n; k++)
            if ((unsigned char)buf[k] != (7 * i + at + k) % 251) {
                check(0, "a byte", i);
                break;
            }
        at += n;
    }
    check(n == 0 && at == 100 + 997L * i, "the read", i);
    return fd;
}

int main(int argc, char **argv) {
    if (argc != 4)
        return 2;
    const char *dir = argv[1], *stop = argv[3];
    int files = atoi(argv[2]);
    printf("ready\n");
    fflush(stdout);
    long rounds = 0;
    int first = -1;
    while (access(stop, F_OK) != 0) {
        for (int i = 0; i < files; i++) {
            int fd = read_one(dir, i);
            if (first < 0)
                first = fd;
            check(fd == first, "the number the last close freed", i);
            check(close(fd) == 0, "close", i);
            if (rounds % 16 == 0 && i == 0) {
                char c;
                check(read(fd, &c, 1) < 0 && errno == EBADF, "a read after the close", i);
            }
        }
        rounds++;
    }
    printf("rounds=%ld bad=%ld\n", rounds, bad);
    return 0;
}
