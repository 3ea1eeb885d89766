/* A CPU-bound program that forks: it forks a child that exits at once, waits for it, computes
 * for about 1.5 s of CPU, then, while COUNT > 1, execs itself again with COUNT - 1, and at the
 * end prints "forker done".
 *
 * Usage: forker COUNT    (run by its absolute path: it execs argv[0]) */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2 || argv[0][0] != '/') {
        fprintf(stderr, "usage: /path/to/forker COUNT\n");
        return 2;
    }
    int count = atoi(argv[1]);
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0)
        _exit(0);
    if (waitpid(child, NULL, 0) != child) {
        perror("waitpid");
        return 1;
    }
    clock_t until = clock() + CLOCKS_PER_SEC * 3 / 2;
    volatile unsigned long x = 1;
    while (clock() < until)
        for (int i = 0; i < 1000000; i++)
            x = x * 6364136223846793005UL + 1;
    if (count > 1) {
        char next[16];
        snprintf(next, sizeof next, "%d", count - 1);
        execl(argv[0], argv[0], next, (char *)NULL);
        perror("execl");
        return 1;
    }
    printf("forker done\n");
    return 0;
}
