/*
 * Looks up one system path as the test says, through words of its own memory that the test
 * reads and writes by /proc/PID/mem where it runs, so that nothing of the conversation needs
 * its home (see tests/dfsa.rs):
 *
 *   lookups PATH   prints "ready ASKED COMMAND ANSWERED ANSWER" (addresses), then:
 *
 * whenever the test writes a command to COMMAND and a new number to ASKED, runs it, writes
 * its answer to ANSWER and the number to ANSWERED:
 *
 *   stat     -> size N   | err ERRNO   (stat of PATH)
 *   missing  -> fd N     | err ERRNO   (open of PATH.missing, read-only)
 *   append   -> appended | err ERRNO   (one line appended to PATH)
 *   end      -> exit 0, answering nothing
 *
 * Between commands it sleeps, which needs no home either.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile int asked, answered;
static char command[64], answer[128];

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: lookups PATH\n");
        return 2;
    }
    const char *path = argv[1];
    char missing[4096];
    snprintf(missing, sizeof missing, "%s.missing", path);
    printf("ready %p %p %p %p\n", (void *)&asked, (void *)command, (void *)&answered,
           (void *)answer);
    fflush(stdout);
    const struct timespec tick = {0, 1000 * 1000};
    for (int n = 0;;) {
        while (asked == n)
            nanosleep(&tick, NULL);
        n = asked;
        __sync_synchronize();
        struct stat st;
        int fd;
        if (strcmp(command, "stat") == 0) {
            if (stat(path, &st) == 0)
                snprintf(answer, sizeof answer, "size %lld", (long long)st.st_size);
            else
                snprintf(answer, sizeof answer, "err %d", errno);
        } else if (strcmp(command, "missing") == 0) {
            fd = open(missing, O_RDONLY | O_CLOEXEC);
            if (fd >= 0) {
                snprintf(answer, sizeof answer, "fd %d", fd);
                close(fd);
            } else {
                snprintf(answer, sizeof answer, "err %d", errno);
            }
        } else if (strcmp(command, "append") == 0) {
            fd = open(path, O_WRONLY | O_APPEND);
            if (fd >= 0 && write(fd, "x\n", 2) == 2 && close(fd) == 0)
                snprintf(answer, sizeof answer, "appended");
            else
                snprintf(answer, sizeof answer, "err %d", errno);
        } else if (strcmp(command, "end") == 0) {
            return 0;
        } else {
            snprintf(answer, sizeof answer, "unknown %.32s", command);
        }
        __sync_synchronize();
        answered = n;
    }
}
