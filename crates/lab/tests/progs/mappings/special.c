/* Mappings whose pages only this node's kernel can back: the process must not move.
 *
 * Usage: special packet|io_uring. `packet` maps an AF_PACKET socket's receive ring
 * (PACKET_RX_RING) read-only; `io_uring` maps an io_uring's submission ring. Prints "ready",
 * then answers each line of stdin: "check" with "ring: mapped" while the ring is still
 * there, "end" by exiting 0.
 */
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PAGE 4096

static void *packet_ring(void) {
    int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    struct tpacket_req req = {.tp_block_size = PAGE, .tp_block_nr = 4, .tp_frame_size = PAGE,
                              .tp_frame_nr = 4};
    if (fd < 0 || setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof req)) {
        perror("packet ring");
        return MAP_FAILED;
    }
    return mmap(NULL, 4 * PAGE, PROT_READ, MAP_SHARED, fd, 0);
}

static void *uring(void) {
    struct io_uring_params params;
    memset(&params, 0, sizeof params);
    int fd = syscall(SYS_io_uring_setup, 4, &params);
    if (fd < 0) {
        perror("io_uring_setup");
        return MAP_FAILED;
    }
    size_t len = params.sq_off.array + params.sq_entries * sizeof(unsigned);
    return mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                IORING_OFF_SQ_RING);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: special packet|io_uring\n");
        return 2;
    }
    void *ring = strcmp(argv[1], "packet") == 0 ? packet_ring() : uring();
    if (ring == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    printf("ready\n");
    fflush(stdout);
    char cmd[64];
    while (fgets(cmd, sizeof cmd, stdin)) {
        if (strcmp(cmd, "check\n") == 0) {
            printf("ring: %s\n", msync(ring, PAGE, MS_ASYNC) == 0 ? "mapped" : "gone");
        } else if (strcmp(cmd, "end\n") == 0) {
            return 0;
        }
        fflush(stdout);
    }
    return 1;
}
