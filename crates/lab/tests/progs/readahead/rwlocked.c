/* rwlocked FILE: reads and writes FILE, opened read-write as sqlite opens its database,
 * through two descriptors, then reads it between fcntl locks while another process at home
 * writes it under the same lock.
 *
 * Part one mixes pread64 of 4 KiB blocks through one descriptor with pwrite64, write and
 * ftruncate through the other (and through the first), and prints a checksum
 * of every byte read: each read must see the writes before it.
 *
 * Part two, for ROUNDS rounds: say "held R" (while the other process holds a write lock on
 * FILE), pread block 0, wait for the lock with F_SETLKW, pread block 0 again and print its
 * first byte, unlock and say "unlocked R". Once this process waits for the lock, the other
 * writes block 0 and unlocks: the read after the lock must see it. The next round waits for a line on stdin,
 * which comes once the other process holds the lock again. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK 4096
#define BLOCKS 256
#define ROUNDS 3

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* One line of stdin, a byte at a time (stdin is a pipe: no read-ahead). */
static void line(void) {
    char c;
    while (read(0, &c, 1) == 1 && c != '\n')
        ;
}

static uint64_t sum = 1469598103934665603ULL;

static void take(const char *buf, ssize_t n) {
    for (ssize_t i = 0; i < n; i++)
        sum = (sum ^ (unsigned char)buf[i]) * 1099511628211ULL;
    sum ^= (uint64_t)n;
}

static void read_block(int fd, long block, char *buf) {
    ssize_t n = pread(fd, buf, BLOCK, block * BLOCK);
    if (n < 0)
        die("pread");
    take(buf, n);
}

static void lock(int fd, short type) {
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(fd, F_SETLKW, &fl) != 0)
        die("fcntl");
}

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    printf("ready\n");
    fflush(stdout);
    line(); /* the test moved us */

    int a = open(argv[1], O_RDWR), b = open(argv[1], O_RDWR);
    if (a < 0 || b < 0)
        die("open");
    char buf[BLOCK], mine[BLOCK];
    for (long i = 0; i < 400; i++) {
        long block = (i * 37) % BLOCKS, near = (block + i % 3) % BLOCKS;
        read_block(a, block, buf);
        memset(mine, 'A' + i % 26, sizeof mine);
        switch (i % 5) {
        case 0: /* pwrite64 through the other descriptor, part of a block */
            if (pwrite(b, mine, 1000, near * BLOCK + 100) != 1000)
                die("pwrite");
            break;
        case 1: /* write at the other descriptor's offset */
            if (lseek(b, near * BLOCK + 7, SEEK_SET) < 0 || write(b, mine, 50) != 50)
                die("write");
            break;
        case 2: /* pwrite64 through the same descriptor, across two blocks */
            if (pwrite(a, mine, BLOCK, near * BLOCK + 3000) != BLOCK)
                die("pwrite");
            break;
        case 3: /* a truncation into the last block, then growing again */
            if (ftruncate(b, (BLOCKS - 1) * BLOCK + i) != 0 ||
                ftruncate(a, BLOCKS * BLOCK) != 0)
                die("ftruncate");
            break;
        default: /* nothing: reads only */
            break;
        }
        read_block(a, near, buf);
        read_block(a, BLOCKS - 1, buf);
    }
    printf("mixed %016llx\n", (unsigned long long)sum);
    fflush(stdout);

    for (int round = 1; round <= ROUNDS; round++) {
        printf("held %d\n", round);
        fflush(stdout);
        /* Nothing goes home between this read and the lock: the bytes stay held. */
        read_block(a, 0, buf);
        lock(a, F_WRLCK);
        if (pread(a, buf, BLOCK, 0) != BLOCK)
            die("pread");
        printf("locked %d: %c\n", round, buf[0]);
        lock(a, F_UNLCK);
        printf("unlocked %d\n", round);
        fflush(stdout);
        if (round < ROUNDS)
            line();
    }
    return 0;
}
