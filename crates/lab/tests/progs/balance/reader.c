/* A job whose work is reading a file: it reads PATH from start to end, over and over, until
 * NAME.stop exists, opening it again for each pass, then prints "passes=N same" if every pass
 * read the bytes of the first, else "passes=N changed".
 *
 * Usage: reader NAME PATH */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

static unsigned long long pass_sum(const char *path, unsigned char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        perror(path);
        _exit(1);
    }
    unsigned long long sum = 0;
    for (;;) {
        ssize_t n = read(fd, buf, size);
        if (n < 0) {
            perror("read");
            _exit(1);
        }
        if (n == 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            sum = sum * 31 + buf[i];
    }
    close(fd);
    return sum;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: reader NAME PATH\n");
        return 2;
    }
    char stop[4096];
    snprintf(stop, sizeof stop, "%s.stop", argv[1]);
    static unsigned char buf[1 << 20];
    unsigned long long first = pass_sum(argv[2], buf, sizeof buf);
    unsigned long long passes = 1;
    int same = 1;
    printf("ready\n");
    fflush(stdout);
    while (access(stop, F_OK) != 0) {
        if (pass_sum(argv[2], buf, sizeof buf) != first)
            same = 0;
        passes++;
    }
    printf("passes=%llu %s\n", passes, same ? "same" : "changed");
    return 0;
}
