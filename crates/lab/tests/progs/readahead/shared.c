/* shared FILE: the description of FILE is shared with a child that stays at home, which
 * reads it through a dup'd descriptor. Parent (moved) and child take turns, passing a token
 * through pipes, each reading the next 4 KiB block through the shared offset. Every block of FILE starts with its number: the parent
 * must get the even blocks and the child the odd ones, as at home. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define ROUNDS 40

static int block(int fd) {
    char buf[4096];
    if (read(fd, buf, sizeof buf) != sizeof buf)
        return -1;
    return atoi(buf);
}

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    int fd = open(argv[1], O_RDONLY);
    int to_child[2], to_parent[2];
    if (fd < 0 || pipe(to_child) || pipe(to_parent))
        return 1;
    char token = 't', line;
    int dupd = dup(fd);
    if (dupd < 0)
        return 1;
    pid_t child = fork();
    if (child == 0) {
        close(to_child[1]);
        close(to_parent[0]);
        char got[ROUNDS * 8 + 8] = "child";
        int at = 5;
        while (read(to_child[0], &token, 1) == 1) {
            at += sprintf(got + at, " %d", block(dupd));
            if (write(to_parent[1], &token, 1) != 1)
                return 1;
        }
        printf("%s\n", got);
        return 0;
    }
    close(to_child[0]);
    close(to_parent[1]);
    printf("ready\n");
    fflush(stdout);
    while (read(0, &line, 1) == 1 && line != '\n')
        ; /* the test moved us */
    printf("parent");
    for (int i = 0; i < ROUNDS; i++) {
        printf(" %d", block(fd));
        if (write(to_child[1], &token, 1) != 1 || read(to_parent[0], &token, 1) != 1)
            return 1;
    }
    printf("\n");
    fflush(stdout);
    close(to_child[1]);
    int status;
    waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
