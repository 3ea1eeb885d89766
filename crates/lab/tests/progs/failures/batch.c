/* batch: sendmmsg and recvmmsg on a datagram socket pair. Says "ready", waits until GOFILE
 * exists (so that it runs wherever it was moved meanwhile), sends three datagrams with one
 * sendmmsg, receives them with one recvmmsg for up to four with MSG_WAITFORONE, and prints
 * "sent N received M: LEN:TEXT ..."; then says "done" and waits until GO2 exists. Exits 0.
 * usage: batch GOFILE GO2 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: batch GOFILE GO2\n");
        return 2;
    }
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, pair) != 0) {
        perror("socketpair");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    while (access(argv[1], F_OK) != 0)
        usleep(20000);
    const char *words[3] = {"a", "bb", "ccc"};
    struct mmsghdr out[3];
    struct iovec out_iov[3];
    memset(out, 0, sizeof out);
    for (int i = 0; i < 3; i++) {
        out_iov[i].iov_base = (void *)words[i];
        out_iov[i].iov_len = strlen(words[i]);
        out[i].msg_hdr.msg_iov = &out_iov[i];
        out[i].msg_hdr.msg_iovlen = 1;
    }
    int sent = sendmmsg(pair[0], out, 3, 0);
    char bufs[4][16];
    struct mmsghdr in[4];
    struct iovec in_iov[4];
    memset(in, 0, sizeof in);
    memset(bufs, 0, sizeof bufs);
    for (int i = 0; i < 4; i++) {
        in_iov[i].iov_base = bufs[i];
        in_iov[i].iov_len = sizeof bufs[i] - 1;
        in[i].msg_hdr.msg_iov = &in_iov[i];
        in[i].msg_hdr.msg_iovlen = 1;
    }
    int received = recvmmsg(pair[1], in, 4, MSG_WAITFORONE, 0);
    printf("sent %d received %d:", sent, received);
    for (int i = 0; i < received; i++)
        printf(" %u:%s", in[i].msg_len, bufs[i]);
    printf("\ndone\n");
    fflush(stdout);
    while (access(argv[2], F_OK) != 0)
        usleep(20000);
    return 0;
}
