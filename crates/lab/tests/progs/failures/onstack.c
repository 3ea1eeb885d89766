/* onstack: a process caught moving while a handler runs on its alternate stack.
 *
 * Sets an alternate signal stack and a SIGUSR1 handler with SA_ONSTACK, says "ready" and
 * waits. The handler says "in handler" and stays there, on the alternate stack, until GOFILE
 * exists; then it returns, and the program checks that it ran on the alternate stack, that
 * the stack is still set, and says "done". Exits 0 if all held. usage: onstack GOFILE */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define ALTSTACK_SIZE (64 * 1024)

static char altstack[ALTSTACK_SIZE];
static const char *go;
static volatile sig_atomic_t handled, on_altstack;

static void on_usr1(int sig) {
    char here;
    (void)sig;
    on_altstack = &here >= altstack && &here < altstack + ALTSTACK_SIZE;
    printf("in handler\n");
    fflush(stdout);
    while (access(go, F_OK) != 0)
        usleep(20000);
    handled = 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: onstack GOFILE\n");
        return 2;
    }
    go = argv[1];
    stack_t ss = {.ss_sp = altstack, .ss_size = ALTSTACK_SIZE};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_ONSTACK;
    if (sigaltstack(&ss, NULL) != 0 || sigaction(SIGUSR1, &sa, NULL) != 0) {
        perror("onstack: setup");
        return 2;
    }
    printf("ready\n");
    fflush(stdout);
    while (!handled)
        pause();
    stack_t now;
    int still_set = sigaltstack(NULL, &now) == 0 && now.ss_sp == altstack &&
                    now.ss_size == ALTSTACK_SIZE && now.ss_flags == 0;
    printf("ran on the alternate stack: %s\n", on_altstack ? "yes" : "no");
    printf("alternate stack still set: %s\n", still_set ? "yes" : "no");
    printf("done\n");
    return on_altstack && still_set ? 0 : 1;
}
