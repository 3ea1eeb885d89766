/* trap: a program that takes its own SIGTRAPs. Says "ready", waits until GOFILE exists (so
 * that it runs wherever it was moved meanwhile), then raises SIGTRAP and executes int3, and
 * prints "traps N", N the times its handler ran (2 when both reached it). usage: trap GOFILE */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t traps;

static void on_trap(int sig) {
    (void)sig;
    traps++;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: trap GOFILE\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_trap;
    sigaction(SIGTRAP, &sa, 0);
    printf("ready\n");
    fflush(stdout);
    while (access(argv[1], F_OK) != 0)
        usleep(20000);
    raise(SIGTRAP);
    __asm__ volatile("int3");
    printf("traps %d\n", (int)traps);
    return 0;
}
