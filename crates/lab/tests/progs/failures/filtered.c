/* filtered: a program with a seccomp filter of its own (getppid fails with errno 77, all else
 * runs). With "before" it installs the filter first, says "ready", waits until GOFILE
 * exists, checks the filter and says "filter holds". With "away" it says "ready", waits until
 * GOFILE exists (so it may have moved meanwhile), installs the filter, checks it, says
 * "filter holds" and "installed", and waits until GO2 exists. Exits 0; 1 if the filter does
 * not hold. usage: filtered GOFILE GO2 before|away */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static void install(void) {
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 77),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof code / sizeof code[0], .filter = code};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
        perror("install the filter");
        _exit(1);
    }
}

static void wait_for(const char *path) {
    while (access(path, F_OK) != 0)
        usleep(20000);
}

static int check(void) {
    errno = 0;
    if (syscall(SYS_getppid) != -1 || errno != 77) {
        printf("FAIL: the filter does not hold\n");
        return 1;
    }
    printf("filter holds\n");
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    int before = argc == 4 && strcmp(argv[3], "before") == 0;
    if (argc != 4 || (!before && strcmp(argv[3], "away") != 0)) {
        fprintf(stderr, "usage: filtered GOFILE GO2 before|away\n");
        return 2;
    }
    if (before)
        install();
    printf("ready\n");
    fflush(stdout);
    wait_for(argv[1]);
    if (before)
        return check();
    install();
    if (check())
        return 1;
    printf("installed\n");
    fflush(stdout);
    wait_for(argv[2]);
    return 0;
}
