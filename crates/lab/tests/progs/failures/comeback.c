/* comeback: fills MIB mebibytes with a pattern, says "ready", waits for GO1, forks (a call
 * that only home can run, so a remote must go home for it) and reports how the fork went,
 * waits for GO2, then prints a checksum of the area and exits 3.
 * usage: comeback MIB GO1 GO2 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void wait_for(const char *path) {
    while (access(path, F_OK) != 0)
        usleep(20000);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: comeback MIB GO1 GO2\n");
        return 2;
    }
    size_t words = (size_t)atol(argv[1]) << 17; /* 1 MiB = 2^17 words of 8 bytes */
    uint64_t *area = malloc(words * sizeof *area);
    if (!area) {
        perror("comeback: malloc");
        return 2;
    }
    for (size_t i = 0; i < words; i++)
        area[i] = (i + 1) * 0x9e3779b97f4a7c15ull;
    printf("ready\n");
    fflush(stdout);
    wait_for(argv[2]);
    pid_t child = fork();
    if (child == 0)
        _exit(0);
    if (child < 0) {
        printf("fork: %s\n", strerror(errno));
    } else {
        int status;
        waitpid(child, &status, 0);
        printf("fork: ok\n");
    }
    fflush(stdout);
    wait_for(argv[3]);
    uint64_t sum = 0;
    for (size_t i = 0; i < words; i++)
        sum = sum * 31 + area[i];
    printf("sum %016llx\n", (unsigned long long)sum);
    return 3;
}
