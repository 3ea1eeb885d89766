/* family: forks N children and waits for them. Each child says "child K pid P", then
 * reads one byte from a pipe its parent holds (away from home, a forwarded call that blocks
 * at home), then sums a series and says "child K sum S". The parent says "ready" once every
 * child has spoken, waits until GOFILE exists, writes a byte to each child's pipe (SIGPIPE is
 * ignored: a child that is gone has no reader left), and reports how each child ended:
 * "child K exited S" or "child K killed SIG". Exits 0. usage: family GOFILE N */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CHILDREN 16

static unsigned long long series(int k) {
    volatile unsigned long long sum = 0;
    for (unsigned long long i = 1; i <= 20000000ULL; i++)
        sum += i % (7 + k);
    return sum;
}

int main(int argc, char **argv) {
    int children = argc == 3 ? atoi(argv[2]) : 0;
    if (children < 1 || children > MAX_CHILDREN) {
        fprintf(stderr, "usage: family GOFILE N (1 to %d children)\n", MAX_CHILDREN);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int pipes[MAX_CHILDREN][2];
    pid_t pids[MAX_CHILDREN];
    for (int k = 0; k < children; k++) {
        if (pipe(pipes[k]) != 0) {
            perror("pipe");
            return 1;
        }
        fflush(stdout);
        pids[k] = fork();
        if (pids[k] < 0) {
            perror("fork");
            return 1;
        }
        if (pids[k] == 0) {
            close(pipes[k][1]);
            printf("child %d pid %d\n", k, (int)getpid());
            fflush(stdout);
            char byte;
            if (read(pipes[k][0], &byte, 1) != 1) {
                printf("child %d: no byte\n", k);
                return 1;
            }
            printf("child %d sum %llu\n", k, series(k));
            fflush(stdout);
            return 0;
        }
        close(pipes[k][0]);
    }
    printf("ready\n");
    fflush(stdout);
    while (access(argv[1], F_OK) != 0)
        usleep(20000);
    for (int k = 0; k < children; k++)
        if (write(pipes[k][1], "x", 1) != 1)
            printf("child %d: its pipe is closed\n", k);
    for (int k = 0; k < children; k++) {
        int status;
        if (waitpid(pids[k], &status, 0) != pids[k]) {
            perror("waitpid");
            return 1;
        }
        if (WIFEXITED(status))
            printf("child %d exited %d\n", k, WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
            printf("child %d killed %d\n", k, WTERMSIG(status));
    }
    return 0;
}
