/* rmosix bench guest: round trip of a forwarded system call.
 *
 * Usage: lseek FILE COUNT
 * Opens FILE, prints "ready", reads one byte from stdin (the go signal: it lets the bench move
 * the process first; once moved, this read is itself forwarded home), then times COUNT calls
 * of lseek(fd, 0, SEEK_CUR) one by one with CLOCK_MONOTONIC (vdso, so the clock stays local)
 * and prints "p50_us=A p90_us=B p99_us=C mean_us=D". A remote process's lseek on a file
 * opened at home runs at home: one request/response per call.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: lseek FILE COUNT\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror("lseek: open");
        return 1;
    }
    int n = atoi(argv[2]);
    if (n < 1) {
        fprintf(stderr, "lseek: COUNT must be positive\n");
        return 2;
    }
    long long *ns = malloc((size_t)n * sizeof *ns);
    if (!ns) {
        perror("lseek: malloc");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    char go;
    if (read(0, &go, 1) != 1) {
        fprintf(stderr, "lseek: no go signal on stdin\n");
        return 1;
    }
    double sum = 0;
    for (int i = 0; i < n; i++) {
        long long t0 = now_ns();
        if (lseek(fd, 0, SEEK_CUR) != 0) {
            perror("lseek: lseek");
            return 1;
        }
        ns[i] = now_ns() - t0;
        sum += (double)ns[i];
    }
    qsort(ns, (size_t)n, sizeof *ns, cmp);
    printf("p50_us=%.3f p90_us=%.3f p99_us=%.3f mean_us=%.3f\n", ns[n / 2] / 1e3,
           ns[n * 9 / 10] / 1e3, ns[n * 99 / 100] / 1e3, sum / n / 1e3);
    fflush(stdout);
    return 0;
}
