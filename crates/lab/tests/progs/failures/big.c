/* big: fills MiB mebibytes with a pattern (no zero pages, so all of it moves), says
 * "ready", waits until GOFILE exists, then prints a checksum of the whole area and exits 3.
 * A failed migration must leave it able to finish with the same output as an unmoved run.
 * Prints "usr1" for every SIGUSR1.
 * usage: big MIB GOFILE */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void on_usr1(int sig) {
    (void)sig;
    write(1, "usr1\n", 5);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: big MIB GOFILE\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    size_t words = (size_t)atol(argv[1]) << 17; /* 1 MiB = 2^17 words of 8 bytes */
    uint64_t *area = malloc(words * sizeof *area);
    if (!area) {
        perror("big: malloc");
        return 2;
    }
    for (size_t i = 0; i < words; i++)
        area[i] = (i + 1) * 0x9e3779b97f4a7c15ull;
    printf("ready\n");
    fflush(stdout);
    while (access(argv[2], F_OK) != 0)
        usleep(20000);
    uint64_t sum = 0;
    for (size_t i = 0; i < words; i++)
        sum = sum * 31 + area[i];
    printf("sum %016llx\n", (unsigned long long)sum);
    return 3;
}
