/* Grows first thing: writes 64 MiB of its own memory, then prints "ready" and computes until
 * NAME.stop exists, prints "done" and exits 0. Placed at its exec, it must move before it
 * runs: its move then carries the few pages of a program that has not started, not the
 * memory it writes once it does.
 *
 * Usage: grows NAME */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GROWTH (64 << 20)

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: grows NAME\n");
        return 2;
    }
    char *memory = malloc(GROWTH);
    if (!memory) {
        perror("malloc");
        return 1;
    }
    for (size_t i = 0; i < GROWTH; i += 4096)
        memory[i] = (char)(i >> 12 | 1);
    printf("ready\n");
    fflush(stdout);
    char path[4096];
    snprintf(path, sizeof path, "%s.stop", argv[1]);
    volatile unsigned long spin = 0;
    while (access(path, F_OK) != 0)
        for (int i = 0; i < 1000000; i++)
            spin++;
    printf("done\n");
    return memory[GROWTH / 2] == 0;
}
