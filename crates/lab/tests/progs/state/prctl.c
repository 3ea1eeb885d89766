/* prctl: settings made with prctl(2) answer the same wherever the process runs. At start
 * (at home) it sets each one away from its default; says "ready"; on each line "check K@NODE"
 * it reads every setting back and prints "K@NODE ok" or "K@NODE FAIL: why", then
 * "checked K@NODE". At its first stop away (K = 1) it changes some of them there, and later
 * stops must see the change. Settings that need a privilege it lacks (IO_FLUSHER,
 * MEMORY_MERGE) are checked as they are. Ends on "end". usage: prctl */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "tour.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#define PR_GET_IO_FLUSHER 58
#endif
#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#define PR_GET_MDWE 66
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif
#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#define PR_GET_MEMORY_MERGE 68
#endif

/* What each GET must answer. */
static struct {
    int thp, slack, tsc, mce, io_flusher, mdwe, merge, dumpable, pdeathsig, subreaper,
        keepcaps;
    char name[16];
} want;

/* A GET that answers in its return value, or -errno. */
static int get(int option, unsigned long arg2) {
    int ret = prctl(option, arg2, 0, 0, 0);
    return ret < 0 ? -errno : ret;
}

/* A GET that answers through an int pointer, or -errno. */
static int get_int(int option) {
    int value = -1;
    return prctl(option, &value, 0, 0, 0) < 0 ? -errno : value;
}

static void set(int option, unsigned long arg2, unsigned long arg3, const char *what) {
    if (prctl(option, arg2, arg3, 0, 0) != 0) {
        printf("setup FAIL: %s: %s\n", what, strerror(errno));
        exit(1);
    }
}

static const char *check(const char *stop, char *why, size_t cap) {
    (void)stop;
    char name[16] = {0};
    prctl(PR_GET_NAME, name, 0, 0, 0);
    struct {
        const char *what;
        int want, got;
    } pairs[] = {
        {"THP_DISABLE", want.thp, get(PR_GET_THP_DISABLE, 0)},
        {"TIMERSLACK", want.slack, get(PR_GET_TIMERSLACK, 0)},
        {"TSC", want.tsc, get_int(PR_GET_TSC)},
        {"MCE_KILL", want.mce, get(PR_MCE_KILL_GET, 0)},
        {"IO_FLUSHER", want.io_flusher, get(PR_GET_IO_FLUSHER, 0)},
        {"MDWE", want.mdwe, get(PR_GET_MDWE, 0)},
        {"MEMORY_MERGE", want.merge, get(PR_GET_MEMORY_MERGE, 0)},
        {"DUMPABLE", want.dumpable, get(PR_GET_DUMPABLE, 0)},
        {"PDEATHSIG", want.pdeathsig, get_int(PR_GET_PDEATHSIG)},
        {"CHILD_SUBREAPER", want.subreaper, get_int(PR_GET_CHILD_SUBREAPER)},
        {"KEEPCAPS", want.keepcaps, get(PR_GET_KEEPCAPS, 0)},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
        if (pairs[i].got != pairs[i].want) {
            snprintf(why, cap, "%s is %d, not %d", pairs[i].what, pairs[i].got, pairs[i].want);
            return why;
        }
    if (strcmp(name, want.name) != 0) {
        snprintf(why, cap, "NAME is %s, not %s", name, want.name);
        return why;
    }
    return 0;
}

/* Changes made away, which the later stops (on at another node, then home) must see. */
static void change_away(void) {
    set(PR_SET_TIMERSLACK, 234567, 0, "TIMERSLACK away");
    set(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_LATE, "MCE_KILL away");
    set(PR_SET_PDEATHSIG, SIGHUP, 0, "PDEATHSIG away");
    set(PR_SET_NAME, (unsigned long)"away", 0, "NAME away");
    want.slack = 234567;
    want.mce = PR_MCE_KILL_LATE;
    want.pdeathsig = SIGHUP;
    strcpy(want.name, "away");
}

/* After the first check away, changes the settings, which must travel too. */
static void after(const char *name) {
    if (strncmp(name, "1@", 2) == 0)
        change_away();
}

int main(void) {
    set(PR_SET_THP_DISABLE, 1, 0, "THP_DISABLE");
    set(PR_SET_TIMERSLACK, 123456, 0, "TIMERSLACK");
    set(PR_SET_TSC, PR_TSC_SIGSEGV, 0, "TSC");
    set(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_EARLY, "MCE_KILL");
    set(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, "MDWE");
    set(PR_SET_DUMPABLE, 0, 0, "DUMPABLE");
    set(PR_SET_PDEATHSIG, SIGUSR2, 0, "PDEATHSIG");
    set(PR_SET_CHILD_SUBREAPER, 1, 0, "CHILD_SUBREAPER");
    set(PR_SET_KEEPCAPS, 1, 0, "KEEPCAPS");
    set(PR_SET_NAME, (unsigned long)"renamed", 0, "NAME");
    /* These need CAP_SYS_RESOURCE: set where allowed, checked as they are. */
    prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
    prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0);
    want.thp = 1;
    want.slack = 123456;
    want.tsc = PR_TSC_SIGSEGV;
    want.mce = PR_MCE_KILL_EARLY;
    want.io_flusher = get(PR_GET_IO_FLUSHER, 0);
    want.mdwe = PR_MDWE_REFUSE_EXEC_GAIN;
    want.merge = get(PR_GET_MEMORY_MERGE, 0);
    want.dumpable = 0;
    want.pdeathsig = SIGUSR2;
    want.subreaper = 1;
    want.keepcaps = 1;
    strcpy(want.name, "renamed");
    printf("ready\n");
    fflush(stdout);
    return tour(check, after);
}
