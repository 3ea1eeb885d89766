/* Per-area advice, a droppable mapping and a guard region that must survive moves.
 *
 * Maps one small area for each of: MADV_WIPEONFORK, MADV_DONTFORK, MADV_DONTDUMP,
 * MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_MERGEABLE, MAP_DROPPABLE, a guard region (page 1 of
 * 3, MADV_GUARD_INSTALL), and one whose MADV_DONTDUMP comes and goes (it keeps
 * MADV_WIPEONFORK). Each area holds its own letter. The areas lie side by side in one
 * reserved range, the guarded one between two advised ones: since Linux 6.18 an area with
 * guards is marked ("gu" in VmFlags) and the mark spreads to a neighbour the kernel merges
 * with it, so a restore that mapped a neighbour plain beside the marked area would leave the
 * mark on it. Prints "ready", then answers each line of stdin:
 *   check  "contents: ok guard: trapped" (every letter where it was; touching the guard
 *          page faults)
 *   fork   "child: wiped absent" from a child: the WIPEONFORK area reads zeros there and the
 *          DONTFORK area is not mapped
 *   flags  "NAME START: VMFLAGS" for each area, from /proc/self/smaps (the flags of the
 *          mapping that holds START, which the kernel may have merged with a neighbour)
 *   toggle "toggling", then gives and takes MADV_DONTDUMP on the toggled area every
 *          millisecond until the next line comes (a move's rounds see its advice change
 *          between them)
 *   state  "toggled: dontdump" or "toggled: dumped", the advice the toggled area had last
 *   end    exits 0
 * Stdin is unbuffered, so that no line waits in stdio's buffer while `toggle` polls.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096
#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08
#endif
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

struct area {
    const char *name;
    int advice; /* -1: none */
    int flags;
    char *at;
    int pages;
};

static struct area areas[] = {
    {"wipeonfork", MADV_WIPEONFORK, MAP_PRIVATE, NULL, 1},
    {"dontfork", MADV_DONTFORK, MAP_PRIVATE, NULL, 1},
    {"dontdump", MADV_DONTDUMP, MAP_PRIVATE, NULL, 1},
    {"hugepage", MADV_HUGEPAGE, MAP_PRIVATE, NULL, 1},
    {"nohugepage", MADV_NOHUGEPAGE, MAP_PRIVATE, NULL, 1},
    {"guarded", -1, MAP_PRIVATE, NULL, 3},
    {"toggled", MADV_WIPEONFORK, MAP_PRIVATE, NULL, 1},
    {"mergeable", MADV_MERGEABLE, MAP_PRIVATE, NULL, 1},
    {"droppable", -1, MAP_DROPPABLE, NULL, 1},
};
#define AREAS (sizeof areas / sizeof areas[0])
#define GUARDED (&areas[5])
#define TOGGLED (&areas[6])

/* Whether the toggled area now has MADV_DONTDUMP. */
static int not_dumped;

static sigjmp_buf trapped;

static void on_segv(int sig) {
    (void)sig;
    siglongjmp(trapped, 1);
}

/* Whether touching the guard page faults. */
static int guard_traps(void) {
    if (sigsetjmp(trapped, 1))
        return 1;
    *(volatile char *)(GUARDED->at + PAGE) = 1;
    return 0;
}

static int contents_ok(void) {
    for (size_t i = 0; i < AREAS; i++)
        for (int p = 0; p < areas[i].pages; p++)
            if (!(areas[i].at == GUARDED->at && p == 1) && areas[i].at[p * PAGE] != 'a' + (int)i)
                return 0;
    return 1;
}

static void show_flags(void) {
    char line[512];
    FILE *smaps = fopen("/proc/self/smaps", "r");
    struct area *in = NULL;
    while (smaps && fgets(line, sizeof line, smaps)) {
        unsigned long start, end;
        if (strchr(line, '-') && strchr(line, '-') < strchr(line, ' ') &&
            sscanf(line, "%lx-%lx", &start, &end) == 2) {
            in = NULL;
            for (size_t i = 0; i < AREAS; i++)
                if (start <= (unsigned long)areas[i].at && (unsigned long)areas[i].at < end)
                    in = &areas[i];
        } else if (in && strncmp(line, "VmFlags:", 8) == 0) {
            printf("%s %lx:%s", in->name, (unsigned long)in->at, line + 8);
        }
    }
    if (smaps)
        fclose(smaps);
}

static void toggle_until_input(void) {
    struct pollfd in = {.fd = 0, .events = POLLIN};
    while (poll(&in, 1, 1) == 0) {
        not_dumped = !not_dumped;
        madvise(TOGGLED->at, PAGE, not_dumped ? MADV_DONTDUMP : MADV_DODUMP);
    }
}

int main(void) {
    int pages = 0;
    for (size_t i = 0; i < AREAS; i++)
        pages += areas[i].pages;
    char *next = mmap(NULL, pages * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (next == MAP_FAILED) {
        perror("mmap");
        return 2;
    }
    for (size_t i = 0; i < AREAS; i++) {
        struct area *a = &areas[i];
        a->at = mmap(next, a->pages * PAGE, PROT_READ | PROT_WRITE,
                     a->flags | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        next += a->pages * PAGE;
        if (a->at == MAP_FAILED || (a->advice >= 0 && madvise(a->at, a->pages * PAGE, a->advice))) {
            fprintf(stderr, "%s: %s\n", a->name, strerror(errno));
            return 2;
        }
        memset(a->at, 'a' + (int)i, a->pages * PAGE);
    }
    if (madvise(GUARDED->at + PAGE, PAGE, MADV_GUARD_INSTALL)) {
        perror("MADV_GUARD_INSTALL");
        return 2;
    }
    signal(SIGSEGV, on_segv);
    setvbuf(stdin, NULL, _IONBF, 0);
    printf("ready\n");
    fflush(stdout);
    char cmd[64];
    while (fgets(cmd, sizeof cmd, stdin)) {
        if (strcmp(cmd, "check\n") == 0) {
            printf("contents: %s guard: %s\n", contents_ok() ? "ok" : "bad",
                   guard_traps() ? "trapped" : "open");
        } else if (strcmp(cmd, "fork\n") == 0) {
            fflush(stdout);
            pid_t child = fork();
            if (child == 0) {
                int wiped = areas[0].at[0] == 0;
                int absent = msync(areas[1].at, PAGE, MS_ASYNC) != 0 && errno == ENOMEM;
                printf("child: %s %s\n", wiped ? "wiped" : "kept", absent ? "absent" : "mapped");
                fflush(stdout);
                _exit(0);
            }
            waitpid(child, NULL, 0);
        } else if (strcmp(cmd, "flags\n") == 0) {
            show_flags();
        } else if (strcmp(cmd, "toggle\n") == 0) {
            printf("toggling\n");
            fflush(stdout);
            toggle_until_input();
        } else if (strcmp(cmd, "state\n") == 0) {
            printf("toggled: %s\n", not_dumped ? "dontdump" : "dumped");
        } else if (strcmp(cmd, "end\n") == 0) {
            return 0;
        }
        fflush(stdout);
    }
    return 1;
}
