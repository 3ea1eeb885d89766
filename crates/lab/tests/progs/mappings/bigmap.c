/* A large file mapped whole, private and read-only, and never written: its pages are the
 * file's own, which a move need not send to a node that holds the same file.
 *
 * Usage: bigmap FILE. Reads the first half of the mapping once (so those pages are in, the
 * others absent: a move's write tracking leaves a marker on those), prints "ready", then
 * answers each line of stdin:
 *   check  "sum: HEX" (FNV-1a, 64 bits, of every byte the mapping reads now)
 *   end    exits 0
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t fnv1a(const unsigned char *at, size_t len) {
    uint64_t hash = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        hash ^= at[i];
        hash *= 0x100000001b3ULL;
    }
    return hash;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: bigmap FILE\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        perror(argv[1]);
        return 2;
    }
    size_t len = (size_t)st.st_size;
    const unsigned char *data = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    close(fd);
    volatile uint64_t first = fnv1a(data, len / 2);
    (void)first;
    printf("ready\n");
    fflush(stdout);
    char cmd[64];
    while (fgets(cmd, sizeof cmd, stdin)) {
        if (strcmp(cmd, "check\n") == 0) {
            printf("sum: %016llx\n", (unsigned long long)fnv1a(data, len));
        } else if (strcmp(cmd, "end\n") == 0) {
            return 0;
        }
        fflush(stdout);
    }
    return 1;
}
