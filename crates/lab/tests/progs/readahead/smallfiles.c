/* Small files opened, checked and read whole, as a compiler reads its headers.
 *
 * smallfiles files DIR N: says "ready" and waits for a line; then opens DIR/0 .. DIR/N-1 in
 * turn, and for each prints the size fstat gives and the sum of the bytes read to its end,
 * then closes it. It then prints the number the next open gets (the one just freed), that a
 * read of a descriptor it closed fails with EBADF, says "closed" and waits for a line before
 * it ends, so that the test can look at what its shell at home holds open meanwhile.
 *
 * smallfiles restat FILE: says "ready" and waits for a line; opens FILE and prints the size
 * fstat gives, says "opened" and waits for a line (the test changes FILE meanwhile; the line
 * goes home, and with it the news of the change); then prints the size fstat gives and the
 * bytes read to the end. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

static void say(const char *what) {
    printf("%s\n", what);
    fflush(stdout);
}

/* Reads FD to its end: how many bytes, and their sum in *sum. */
static long read_all(int fd, unsigned long *sum) {
    char buf[1024];
    long total = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            *sum += (unsigned char)buf[i];
        total += n;
    }
    if (n < 0)
        die("read");
    return total;
}

static long size_of(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0)
        die("fstat");
    if (!S_ISREG(st.st_mode))
        die("not a regular file");
    return (long)st.st_size;
}

static void files(const char *dir, int n) {
    char path[4096];
    int last = -1;
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%d", dir, i);
        int fd = open(path, O_RDONLY | O_NOCTTY);
        if (fd < 0)
            die(path);
        unsigned long sum = 0;
        long size = size_of(fd);
        long got = read_all(fd, &sum);
        printf("%d size=%ld read=%ld sum=%lu\n", i, size, got, sum);
        if (close(fd) != 0)
            die("close");
        last = fd;
    }
    snprintf(path, sizeof path, "%s/0", dir);
    int again = open(path, O_RDONLY);
    if (again < 0)
        die(path);
    printf("reopened under the closed number: %s\n", again == last ? "yes" : "no");
    if (close(again) != 0)
        die("close");
    char c;
    if (read(again, &c, 1) < 0 && errno == EBADF)
        printf("a closed descriptor reads EBADF\n");
    say("closed");
    line();
}

static void restat(const char *file) {
    int fd = open(file, O_RDONLY);
    if (fd < 0)
        die(file);
    printf("size=%ld\n", size_of(fd));
    say("opened");
    line();
    unsigned long sum = 0;
    long size = size_of(fd);
    long got = read_all(fd, &sum);
    printf("size=%ld read=%ld sum=%lu\n", size, got, sum);
    close(fd);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    say("ready");
    line();
    if (argc == 4 && strcmp(argv[1], "files") == 0)
        files(argv[2], atoi(argv[3]));
    else if (argc == 3 && strcmp(argv[1], "restat") == 0)
        restat(argv[2]);
    else
        return 2;
    return 0;
}
