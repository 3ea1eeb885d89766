/* membarrier: the process's membarrier(2) registrations answer the same wherever it runs,
 * and the command it registered for works there. At start (at home) it registers for
 * private expedited barriers; says "ready"; on each line "check K@NODE" it asks
 * MEMBARRIER_CMD_GET_REGISTRATIONS and issues a private expedited barrier (EPERM without
 * its registration), and prints "K@NODE ok" or "K@NODE FAIL: why", then "checked K@NODE".
 * At its first stop away (K = 1) it registers for sync-core barriers too, which later
 * stops must see. Ends on "end". usage: membarrier */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/membarrier.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define GET_REGISTRATIONS (1 << 9)

static int membarrier(int cmd) {
    return syscall(SYS_membarrier, cmd, 0, 0);
}

static long want;

static const char *check(char *why, size_t cap) {
    long got = membarrier(GET_REGISTRATIONS);
    if (got != want) {
        snprintf(why, cap, "registrations are %#lx, not %#lx", got, want);
        return why;
    }
    if (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0) {
        snprintf(why, cap, "a private expedited barrier fails: %s", strerror(errno));
        return why;
    }
    return 0;
}

/* One line from stdin, a byte at a time so that nothing past it is read. */
static int read_line(char *line, size_t cap) {
    size_t len = 0;
    while (len + 1 < cap) {
        char c;
        if (read(0, &c, 1) != 1)
            return -1;
        if (c == '\n')
            break;
        line[len++] = c;
    }
    line[len] = 0;
    return 0;
}

int main(void) {
    if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0) {
        perror("register");
        return 1;
    }
    want = MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED;
    printf("ready\n");
    fflush(stdout);
    char line[128], why[256];
    while (read_line(line, sizeof line) == 0) {
        if (strcmp(line, "end") == 0)
            return 0;
        const char *name = line + strlen("check ");
        const char *failed = check(why, sizeof why);
        if (failed)
            printf("%s FAIL: %s\n", name, failed);
        else
            printf("%s ok\n", name);
        if (strncmp(name, "1@", 2) == 0) {
            if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE) != 0)
                printf("%s FAIL: register sync-core: %s\n", name, strerror(errno));
            want |= MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE;
        }
        printf("checked %s\n", name);
        fflush(stdout);
    }
    return 1;
}
