/* rmosix bench guest: many small writes into a pipe.
 *
 * Usage: pipewrite MIB
 * Reads one byte from stdin (the go signal: it lets the bench move the process first), then
 * writes MIB MiB to stdout in 4 KiB writes, each its own call, every block different, and
 * exits. The bench reads stdout at home and checks the bytes against a run never moved.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2 || atol(argv[1]) < 1) {
        fprintf(stderr, "usage: pipewrite MIB\n");
        return 2;
    }
    long blocks = atol(argv[1]) * 256;
    char go;
    if (read(0, &go, 1) != 1) {
        fprintf(stderr, "pipewrite: no go signal on stdin\n");
        return 1;
    }
    static char block[4096];
    for (long i = 0; i < blocks; i++) {
        memset(block, 'a' + i % 26, sizeof block);
        snprintf(block, 24, "%ld\n", i);
        for (size_t at = 0; at < sizeof block;) {
            ssize_t n = write(1, block + at, sizeof block - at);
            if (n < 0) {
                perror("pipewrite: write");
                return 1;
            }
            at += (size_t)n;
        }
    }
    return 0;
}
