/* Spawns children without a pause, each in one of six ways in turn: vfork then exec, fork
 * then exit, fork then exec, clone then return, posix_spawn, and clone(CLONE_VM|CLONE_VFORK)
 * then exec (what posix_spawn and Python's subprocess do inside). Every child ends with a
 * status its number decides, which the parent checks. Children that exec run this program
 * again as "spawner child N".
 *
 * Usage: spawner STOPFILE. Prints "ready", spawns until STOPFILE exists, then prints
 * "children=N bad=0" (bad counts children whose status was wrong) and exits 0, or 1 if any
 * was wrong. */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static const char *self;

/* A little work, so that child N (and a parent in vfork) spends a while at each point; every
 * eighth child a hundred times longer, so that orders meet children too. */
static void spin(long n) {
    int loops = n % 8 == 0 ? 200000000 : 200000;
    for (volatile int i = 0; i < loops; i++) {
    }
}

static int status_of(long n) { return (int)(n % 50); }

static void exec_child(long n) {
    char num[32];
    snprintf(num, sizeof num, "%ld", n);
    char *argv[] = {(char *)self, "child", num, NULL};
    execve(self, argv, environ);
    _exit(127);
}

static int cloned(void *arg) {
    spin((long)arg);
    return status_of((long)arg);
}

static int cloned_exec(void *arg) {
    exec_child((long)arg);
    return 127;
}

static char stack[64 << 10];

static pid_t spawn(long n) {
    pid_t pid = -1;
    switch (n % 6) {
    case 0:
        pid = vfork();
        if (pid == 0) {
            spin(n);
            exec_child(n);
        }
        break;
    case 1:
        pid = fork();
        if (pid == 0) {
            spin(n);
            _exit(status_of(n));
        }
        break;
    case 2:
        pid = fork();
        if (pid == 0)
            exec_child(n);
        break;
    case 3:
        pid = clone(cloned, stack + sizeof stack, SIGCHLD, (void *)n);
        break;
    case 4: {
        char num[32];
        snprintf(num, sizeof num, "%ld", n);
        char *argv[] = {(char *)self, "child", num, NULL};
        if (posix_spawn(&pid, self, NULL, NULL, argv, environ) != 0)
            pid = -1;
        break;
    }
    case 5:
        pid = clone(cloned_exec, stack + sizeof stack, CLONE_VM | CLONE_VFORK | SIGCHLD,
                    (void *)n);
        break;
    }
    return pid;
}

int main(int argc, char **argv) {
    self = argv[0];
    if (argc == 3 && strcmp(argv[1], "child") == 0) {
        long n = atol(argv[2]);
        spin(n);
        return status_of(n);
    }
    if (argc != 2) {
        fprintf(stderr, "usage: spawner STOPFILE\n");
        return 2;
    }
    printf("ready\n");
    fflush(stdout);
    long n = 0, bad = 0;
    while (access(argv[1], F_OK) != 0) {
        pid_t pid = spawn(n);
        if (pid < 0) {
            perror("spawn");
            return 2;
        }
        int status;
        if (waitpid(pid, &status, 0) != pid) {
            perror("waitpid");
            return 2;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != status_of(n)) {
            fprintf(stderr, "child %ld (way %ld): status %#x\n", n, n % 6, status);
            bad++;
        }
        n++;
    }
    printf("children=%ld bad=%ld\n", n, bad);
    return bad != 0;
}
