/* reader MODE FILE: reads FILE in one of these ways and prints what it got, as a checksum
 * and the offsets it saw, so that a run moved to another node can be compared byte for byte
 * with a run that never moved. It says "ready" and waits for a line on stdin first.
 *   seq     read() 4 KiB at a time to the end
 *   readv   readv() of 1000, 3000 and 5000 bytes to the end
 *   seek    read() mixed with lseek() back and forth, and past the end
 *   pread   pread() of 4 KiB at scattered offsets, some past the end
 *   twofds  two descriptors of FILE read in turns, 4 KiB and 1000 bytes at a time
 *   spin    seq, but halfway it says "half", reads 8 blocks more and spins (no system
 *           call) until SIGUSR1: the test moves it meanwhile */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

static volatile sig_atomic_t go_on;

static void on_usr1(int sig) { (void)sig; go_on = 1; }

static uint64_t sum = 1469598103934665603ULL; /* FNV-1a */
static long bytes;

static void mix(const char *buf, ssize_t n) {
    for (ssize_t i = 0; i < n; i++)
        sum = (sum ^ (unsigned char)buf[i]) * 1099511628211ULL;
    if (n > 0)
        bytes += n;
}

/* Every result goes into the sum too: a short read or an error shows. */
static void mix_result(long long r) { mix((const char *)&r, sizeof r); }

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    const char *mode = argv[1];
    char line;
    printf("ready\n");
    fflush(stdout);
    while (read(0, &line, 1) == 1 && line != '\n')
        ;
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0)
        return 1;
    static char buf[16384];
    ssize_t n;
    if (strcmp(mode, "seq") == 0) {
        while ((n = read(fd, buf, 4096)) > 0)
            mix(buf, n);
        mix_result(n);
    } else if (strcmp(mode, "spin") == 0) {
        struct sigaction sa = {.sa_handler = on_usr1};
        sigaction(SIGUSR1, &sa, NULL);
        off_t half = lseek(fd, 0, SEEK_END) / 2;
        lseek(fd, 0, SEEK_SET);
        for (off_t got = 0; got < half && (n = read(fd, buf, 4096)) > 0; got += n)
            mix(buf, n);
        printf("half\n");
        fflush(stdout);
        for (int i = 0; i < 8 && (n = read(fd, buf, 4096)) > 0; i++)
            mix(buf, n);
        while (!go_on)
            ;
        while ((n = read(fd, buf, 4096)) > 0)
            mix(buf, n);
        mix_result(n);
    } else if (strcmp(mode, "readv") == 0) {
        struct iovec iov[3] = {{buf, 1000}, {buf + 1000, 3000}, {buf + 4000, 5000}};
        while ((n = readv(fd, iov, 3)) > 0)
            mix(buf, n);
        mix_result(n);
    } else if (strcmp(mode, "seek") == 0) {
        for (int i = 0; i < 400; i++) {
            n = read(fd, buf, 4096);
            mix(buf, n);
            mix_result(n);
            if (n <= 0)
                mix_result(lseek(fd, (off_t)i * 4096 % 300000, SEEK_SET));
            else if (i % 7 == 3)
                mix_result(lseek(fd, -10000, SEEK_CUR));
            else if (i % 11 == 5)
                mix_result(lseek(fd, 50000, SEEK_CUR));
            else if (i % 97 == 0)
                mix_result(lseek(fd, 123, SEEK_END));
        }
        mix_result(lseek(fd, 0, SEEK_CUR));
    } else if (strcmp(mode, "pread") == 0) {
        off_t size = lseek(fd, 0, SEEK_END);
        uint64_t x = 12345;
        for (int i = 0; i < 20000; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            off_t at = (off_t)((x >> 20) % (uint64_t)(size + 100000));
            n = pread(fd, buf, 4096, at);
            mix(buf, n);
            mix_result(n);
        }
        mix_result(lseek(fd, 0, SEEK_CUR));
    } else if (strcmp(mode, "twofds") == 0) {
        int other = open(argv[2], O_RDONLY);
        ssize_t m = 1;
        do {
            n = read(fd, buf, 4096);
            mix(buf, n);
            if (m > 0) {
                m = read(other, buf, 1000);
                mix(buf, m);
            }
        } while (n > 0);
        mix_result(lseek(fd, 0, SEEK_CUR));
        mix_result(lseek(other, 0, SEEK_CUR));
    } else {
        return 2;
    }
    printf("sum=%016llx bytes=%ld\n", (unsigned long long)sum, bytes);
    return 0;
}
