/* Says where it began: creates NAME.ran first thing, prints "ready argv0=ARGV0", computes
 * until NAME.stop exists, prints "done" and exits 0. A program mosrun refused to start
 * elsewhere must never have created NAME.ran.
 *
 * Usage: placed NAME */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: placed NAME\n");
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s.ran", argv[1]);
    int fd = open(path, O_CREAT | O_WRONLY, 0644);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    close(fd);
    printf("ready argv0=%s\n", argv[0]);
    fflush(stdout);
    snprintf(path, sizeof path, "%s.stop", argv[1]);
    volatile unsigned long spin = 0;
    while (access(path, F_OK) != 0)
        for (int i = 0; i < 1000000; i++)
            spin++;
    printf("done\n");
    return 0;
}
