/* sockopts: getsockopt and setsockopt give at each node what they give at home. At start
 * (at home) it opens its sockets, sets options (a classic BPF filter among them) and reads
 * a reference answer for each query. Says "ready"; on each line "check NAME" it asks again,
 * compares every answer (result, errno, optlen and the buffer's bytes, with a guard after
 * what the kernel writes) and prints "NAME ok" or "NAME FAIL: why", then "checked NAME".
 * Ends on "end". usage: sockopts */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tour.h"

#define GUARD 0xa5
#define QUERIES 6

/* One getsockopt: its result, errno, optlen and buffer as it came back. */
struct answer {
    int ret, err;
    socklen_t len;
    unsigned char buf[256];
};

static int udp, tcp, pair[2];
static struct sock_filter filter[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0),
    BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 1, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, 0xffff),
    BPF_STMT(BPF_RET | BPF_K, 0),
};

static void ask(int fd, int level, int name, socklen_t len, const void *request,
                size_t request_len, struct answer *a) {
    memset(a->buf, GUARD, sizeof a->buf);
    memcpy(a->buf, request, request_len);
    a->len = len;
    errno = 0;
    a->ret = getsockopt(fd, level, name, a->buf, &a->len);
    a->err = a->ret < 0 ? errno : 0;
}

/* Query k of the list; each reads its own option. */
static void query(int k, struct answer *a) {
    struct ip_msfilter msf;
    memset(&msf, 0, sizeof msf);
    msf.imsf_multiaddr.s_addr = htonl(0xe0010101); /* 224.1.1.1, never joined */
    switch (k) {
    case 0: /* counted in instructions, not bytes */
        ask(udp, SOL_SOCKET, SO_GET_FILTER, 4, 0, 0, a);
        break;
    case 1: /* asks how many instructions there are */
        ask(udp, SOL_SOCKET, SO_GET_FILTER, 0, 0, 0, a);
        break;
    case 2: /* writes 4 of the 16 bytes offered */
        ask(udp, SOL_SOCKET, SO_TYPE, 16, 0, 0, a);
        break;
    case 3: /* ERANGE and the length it needs, or no groups at all */
        ask(pair[0], SOL_SOCKET, SO_PEERGROUPS, 0, 0, 0, a);
        break;
    case 4: /* reads its request (the group) from the buffer first */
        ask(udp, IPPROTO_IP, IP_MSFILTER, sizeof msf, &msf, sizeof msf, a);
        break;
    case 5:
        /* up to the times since the last packets, which move on */
        ask(tcp, IPPROTO_TCP, TCP_INFO, 44, 0, 0, a);
        break;
    }
}

static struct answer reference[QUERIES];

static const char *check(const char *name, char *why, size_t cap) {
    (void)name;
    for (int k = 0; k < QUERIES; k++) {
        struct answer now;
        query(k, &now);
        const struct answer *home = &reference[k];
        if (now.ret != home->ret || now.err != home->err || now.len != home->len) {
            snprintf(why, cap, "query %d: %d/%d/%u at home, %d/%d/%u here", k, home->ret,
                     home->err, home->len, now.ret, now.err, now.len);
            return why;
        }
        if (memcmp(now.buf, home->buf, sizeof now.buf) != 0) {
            snprintf(why, cap, "query %d: the buffer differs from home's", k);
            return why;
        }
    }
    /* An option set here reads back here. */
    static int ttl = 60;
    ttl++;
    int got = 0;
    socklen_t len = sizeof got;
    if (setsockopt(udp, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl) != 0 ||
        getsockopt(udp, IPPROTO_IP, IP_TTL, &got, &len) != 0 || got != ttl) {
        snprintf(why, cap, "IP_TTL %d reads back as %d", ttl, got);
        return why;
    }
    return 0;
}

int main(void) {
    udp = socket(AF_INET, SOCK_DGRAM, 0);
    tcp = socket(AF_INET, SOCK_STREAM, 0);
    struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
    if (udp < 0 || tcp < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0 ||
        setsockopt(udp, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0) {
        perror("setup");
        return 1;
    }
    for (int k = 0; k < QUERIES; k++)
        query(k, &reference[k]);
    if (reference[0].ret != 0 || reference[0].len != 4 ||
        memcmp(reference[0].buf, filter, sizeof filter) != 0 || reference[0].buf[32] != GUARD) {
        printf("home FAIL: SO_GET_FILTER does not read back the filter\n");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    return tour(check, NULL);
}
