/* rmosix bench: the file work of a process, timed from the moment it is told to go (a line
 * on stdin), so that the bench can move it first.
 *
 * Usage: files read PATH                  open PATH, read it to its end in 1 MiB reads, print
 *                                         "bytes=N secs=S"
 *        files read-opened PATH           the same, PATH opened before it waits (where it was
 *                                         started)
 *        files headers COUNT LIST PREFIX  read the names in file LIST (one a line) first; then
 *                                         COUNT times, name after name, stat PREFIX/NAME,
 *                                         open it, read it to its end, close it; print
 *                                         "ops=COUNT bytes=N secs=S"
 * Prints "ready" once it waits for the word.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1 << 20)
#define MAX_NAMES 4096

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void wait_for_go(void) {
    printf("ready\n");
    fflush(stdout);
    char c;
    while (read(0, &c, 1) == 1 && c != '\n')
        ;
}

static char buf[CHUNK];

/* Reads fd to its end; the bytes read, or -1. */
static long long drain(int fd) {
    long long total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0)
            return -1;
        if (n == 0)
            return total;
        total += n;
    }
}

static int do_read(const char *path, int opened_first) {
    int fd = -1;
    if (opened_first)
        fd = open(path, O_RDONLY);
    wait_for_go();
    double t0 = now_s();
    if (!opened_first)
        fd = open(path, O_RDONLY);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    long long bytes = drain(fd);
    double secs = now_s() - t0;
    if (bytes < 0) {
        perror("read");
        return 1;
    }
    printf("bytes=%lld secs=%.6f\n", bytes, secs);
    return 0;
}

static int do_headers(long count, const char *list, const char *prefix) {
    static char *names[MAX_NAMES];
    int n = 0;
    FILE *f = fopen(list, "r");
    if (!f) {
        perror(list);
        return 1;
    }
    char line[1024];
    while (n < MAX_NAMES && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (*line) {
            char *path = malloc(strlen(prefix) + strlen(line) + 2);
            sprintf(path, "%s/%s", prefix, line);
            names[n++] = path;
        }
    }
    fclose(f);
    if (n == 0) {
        fprintf(stderr, "%s: no names\n", list);
        return 1;
    }
    wait_for_go();
    double t0 = now_s();
    long long bytes = 0;
    for (long i = 0; i < count; i++) {
        const char *path = names[i % n];
        struct stat st;
        if (stat(path, &st) != 0) {
            perror(path);
            return 1;
        }
        int fd = open(path, O_RDONLY);
        if (fd < 0) {
            perror(path);
            return 1;
        }
        long long got = drain(fd);
        close(fd);
        if (got != st.st_size) {
            fprintf(stderr, "%s: read %lld of %lld bytes\n", path, got, (long long)st.st_size);
            return 1;
        }
        bytes += got;
    }
    double secs = now_s() - t0;
    printf("ops=%ld bytes=%lld secs=%.6f\n", count, bytes, secs);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "read") == 0)
        return do_read(argv[2], 0);
    if (argc == 3 && strcmp(argv[1], "read-opened") == 0)
        return do_read(argv[2], 1);
    if (argc == 5 && strcmp(argv[1], "headers") == 0)
        return do_headers(atol(argv[2]), argv[3], argv[4]);
    fprintf(stderr, "usage: files read|read-opened PATH | files headers COUNT LIST PREFIX\n");
    return 2;
}
