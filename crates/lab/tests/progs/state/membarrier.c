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

#include "tour.h"

#define GET_REGISTRATIONS (1 << 9)

static int membarrier(int cmd) {
    return syscall(SYS_membarrier, cmd, 0, 0);
}

static long want;

static const char *check(const char *name, char *why, size_t cap) {
    (void)name;
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

/* After the first check away, registers one more kind, which must travel too. */
static void after(const char *name) {
    if (strncmp(name, "1@", 2) != 0)
        return;
    if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE) != 0)
        printf("%s FAIL: register sync-core: %s\n", name, strerror(errno));
    want |= MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE;
}

int main(void) {
    if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0) {
        perror("register");
        return 1;
    }
    want = MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED;
    printf("ready\n");
    fflush(stdout);
    return tour(check, after);
}
