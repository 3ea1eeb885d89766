/* rmosix bench baseline: raw TCP throughput over the lab link, one stream.
 *
 * Usage: tcp recv PORT [MIB]    accept one connection, read to EOF, close, print "received=N";
 *                               with MIB, read into MIB MiB of newly mapped memory, one
 *                               byte after another, as the plainest receiver of a process
 *                               image would (each page of it must be allocated first)
 *        tcp send ADDR PORT MIB send MIB MiB in 1 MiB writes, half-close, wait for the
 *                               receiver's close, print "bytes=N secs=S"
 *        tcp pong PORT          accept one connection and send back each 16-byte message
 *                               until EOF
 *        tcp ping ADDR PORT N   send N 16-byte messages one after another, each once the
 *                               last came back, print "p50_us=.. p90_us=.. p99_us=..
 *                               mean_us=.." of the round trips: the floor under a call
 *                               forwarded home, which is one such round trip
 * The sender's clock runs from connect to the receiver's close, so every byte has been read
 * by the receiver. Buffers hold non-zero data (it makes no difference to TCP, but keeps the
 * comparison with the migration honest).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1 << 20)
#define MSG 16

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int do_recv(int port, long fresh_mib) {
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1)) {
        perror("tcp recv: bind/listen");
        return 1;
    }
    printf("listening\n");
    fflush(stdout);
    int s = accept(ls, NULL, NULL);
    if (s < 0) {
        perror("tcp recv: accept");
        return 1;
    }
    size_t room = (size_t)fresh_mib << 20;
    char *mem = NULL;
    if (fresh_mib > 0) {
        mem = mmap(NULL, room, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) {
            perror("tcp recv: mmap");
            return 1;
        }
    }
    char *buf = malloc(CHUNK);
    long long total = 0;
    ssize_t n;
    for (;;) {
        char *into = buf;
        size_t want = CHUNK;
        if (mem != NULL && (size_t)total < room) {
            into = mem + total;
            want = room - (size_t)total < CHUNK ? room - (size_t)total : CHUNK;
        }
        if ((n = read(s, into, want)) <= 0)
            break;
        if (mem != NULL && into == buf) {
            fprintf(stderr, "tcp recv: more than %ld MiB arrived\n", fresh_mib);
            return 1;
        }
        total += n;
    }
    close(s);
    printf("received=%lld\n", total);
    return n < 0;
}

static int do_send(const char *addr, int port, long mib) {
    char *buf = malloc(CHUNK);
    memset(buf, 0xa5, CHUNK);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, addr, &a.sin_addr) != 1) {
        fprintf(stderr, "tcp send: bad address %s\n", addr);
        return 2;
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    double t0 = now_s();
    if (connect(s, (struct sockaddr *)&a, sizeof a)) {
        perror("tcp send: connect");
        return 1;
    }
    long long total = 0;
    for (long i = 0; i < mib; i++) {
        size_t off = 0;
        while (off < CHUNK) {
            ssize_t n = write(s, buf + off, CHUNK - off);
            if (n <= 0) {
                perror("tcp send: write");
                return 1;
            }
            off += (size_t)n;
            total += n;
        }
    }
    shutdown(s, SHUT_WR);
    while (read(s, buf, CHUNK) > 0) {
    }
    double secs = now_s() - t0;
    printf("bytes=%lld secs=%.6f\n", total, secs);
    return 0;
}

/* Reads exactly `len` bytes; 0 at EOF before any, -1 on an error or a short message. */
static int read_full(int s, char *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(s, buf + got, len - got);
        if (n == 0 && got == 0)
            return 0;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 1;
}

static int do_pong(int port) {
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1)) {
        perror("tcp pong: bind/listen");
        return 1;
    }
    printf("listening\n");
    fflush(stdout);
    int s = accept(ls, NULL, NULL);
    if (s < 0) {
        perror("tcp pong: accept");
        return 1;
    }
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char msg[MSG];
    int r;
    while ((r = read_full(s, msg, MSG)) > 0) {
        if (write(s, msg, MSG) != MSG) {
            perror("tcp pong: write");
            return 1;
        }
    }
    return r < 0;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int do_ping(const char *addr, int port, long n) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (n < 1 || inet_pton(AF_INET, addr, &a.sin_addr) != 1) {
        fprintf(stderr, "tcp ping: bad address %s or count %ld\n", addr, n);
        return 2;
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    if (connect(s, (struct sockaddr *)&a, sizeof a)) {
        perror("tcp ping: connect");
        return 1;
    }
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    double *us = malloc(sizeof(double) * (size_t)n);
    char msg[MSG] = "rmosix ping";
    double sum = 0;
    for (long i = 0; i < n; i++) {
        double t0 = now_s();
        if (write(s, msg, MSG) != MSG || read_full(s, msg, MSG) != 1) {
            perror("tcp ping: round trip");
            return 1;
        }
        us[i] = (now_s() - t0) * 1e6;
        sum += us[i];
    }
    close(s);
    qsort(us, (size_t)n, sizeof *us, by_value);
    printf("p50_us=%.2f p90_us=%.2f p99_us=%.2f mean_us=%.2f\n", us[n / 2], us[n * 9 / 10],
           us[n * 99 / 100], sum / (double)n);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "recv") == 0)
        return do_recv(atoi(argv[2]), 0);
    if (argc == 4 && strcmp(argv[1], "recv") == 0)
        return do_recv(atoi(argv[2]), atol(argv[3]));
    if (argc == 5 && strcmp(argv[1], "send") == 0)
        return do_send(argv[2], atoi(argv[3]), atol(argv[4]));
    if (argc == 3 && strcmp(argv[1], "pong") == 0)
        return do_pong(atoi(argv[2]));
    if (argc == 5 && strcmp(argv[1], "ping") == 0)
        return do_ping(argv[2], atoi(argv[3]), atol(argv[4]));
    fprintf(stderr, "usage: tcp recv PORT [MIB] | tcp send ADDR PORT MIB | tcp pong PORT | "
                    "tcp ping ADDR PORT N\n");
    return 2;
}
