/* Prints the signals whose disposition is not the default with no flags or mask, one
 * "SIG:ign" or "SIG:handler=H,flags=F" each, on one line after "dispositions:", then exits
 * 0. Run placed at its exec, it shows what the move carried of the dispositions its exec
 * left: those it ignores, inherited, and nothing else. */
#include <signal.h>
#include <stdio.h>

int main(void) {
    printf("dispositions:");
    for (int sig = 1; sig <= SIGRTMAX; sig++) {
        struct sigaction old;
        if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &old) != 0)
            continue;
        int masked = 0;
        for (int s = 1; s <= SIGRTMAX; s++)
            masked |= sigismember(&old.sa_mask, s) == 1;
        if (old.sa_handler == SIG_IGN && old.sa_flags == 0 && !masked)
            printf(" %d:ign", sig);
        else if (old.sa_handler != SIG_DFL || old.sa_flags != 0 || masked)
            printf(" %d:handler=%p,flags=%#x", sig, (void *)old.sa_handler, old.sa_flags);
    }
    printf("\n");
    return 0;
}
