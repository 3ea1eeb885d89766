/* A job that spends its time in calls forwarded home: it asks for its parent's PID, over and
 * over, until NAME.stop exists, then prints "calls=N parent=same" if every answer was the
 * first one (its home identity held wherever it ran), else "parent=changed".
 *
 * Usage: chatty NAME */
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: chatty NAME\n");
        return 2;
    }
    char stop[4096];
    snprintf(stop, sizeof stop, "%s.stop", argv[1]);
    long parent = syscall(SYS_getppid);
    int same = 1;
    unsigned long long calls = 0;
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        for (int i = 0; i < 1000; i++, calls++)
            if (syscall(SYS_getppid) != parent)
                same = 0;
        if (access(stop, F_OK) == 0)
            break;
    }
    printf("calls=%llu parent=%s\n", calls, same ? "same" : "changed");
    return 0;
}
