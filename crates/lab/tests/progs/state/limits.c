/* limits: resource limits set at home hold, and answer the same, wherever the process runs.
 * At start (at home) it lowers its limits of open files, core size and address space; says
 * "ready"; on each line "check K@NODE" it reads them back and tries a mapping larger than
 * its address space allows (which must fail where it runs) and one that fits, and prints
 * "K@NODE ok" or "K@NODE FAIL: why", then "checked K@NODE". At its first stop away (K = 1)
 * it lowers its limit of open files again there, and later stops must see it. Ends on
 * "end". usage: limits */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "tour.h"

/* A gibibyte of address space: a small program's own mappings fit, 2 GiB do not. */
#define SPACE (1UL << 30)

static rlim_t files = 64;

static void lower(int resource, rlim_t soft, rlim_t hard, const char *what) {
    struct rlimit limit;
    getrlimit(resource, &limit);
    limit.rlim_cur = soft;
    if (hard != RLIM_INFINITY)
        limit.rlim_max = hard;
    if (setrlimit(resource, &limit) != 0) {
        printf("setup FAIL: %s: %s\n", what, strerror(errno));
        exit(1);
    }
}

static const char *check(const char *stop, char *why, size_t cap) {
    (void)stop;
    struct rlimit limit;
    getrlimit(RLIMIT_NOFILE, &limit);
    if (limit.rlim_cur != files) {
        snprintf(why, cap, "RLIMIT_NOFILE %llu, not %llu", (unsigned long long)limit.rlim_cur,
                 (unsigned long long)files);
        return why;
    }
    getrlimit(RLIMIT_CORE, &limit);
    if (limit.rlim_cur != 0 || limit.rlim_max != 0) {
        snprintf(why, cap, "RLIMIT_CORE %llu/%llu", (unsigned long long)limit.rlim_cur,
                 (unsigned long long)limit.rlim_max);
        return why;
    }
    getrlimit(RLIMIT_AS, &limit);
    if (limit.rlim_cur != SPACE) {
        snprintf(why, cap, "RLIMIT_AS %llu", (unsigned long long)limit.rlim_cur);
        return why;
    }
    void *big = mmap(NULL, 2 * SPACE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (big != MAP_FAILED) {
        munmap(big, 2 * SPACE);
        return "a 2 GiB mapping went past RLIMIT_AS here";
    }
    void *small = mmap(NULL, 16 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (small == MAP_FAILED) {
        snprintf(why, cap, "a 16 MiB mapping: %s", strerror(errno));
        return why;
    }
    munmap(small, 16 << 20);
    return NULL;
}

static void after(const char *stop) {
    if (strncmp(stop, "1@", 2) == 0) {
        files = 48;
        lower(RLIMIT_NOFILE, files, RLIM_INFINITY, "RLIMIT_NOFILE away");
    }
}

int main(void) {
    lower(RLIMIT_NOFILE, files, RLIM_INFINITY, "RLIMIT_NOFILE");
    lower(RLIMIT_CORE, 0, 0, "RLIMIT_CORE");
    lower(RLIMIT_AS, SPACE, RLIM_INFINITY, "RLIMIT_AS");
    printf("ready\n");
    fflush(stdout);
    return tour(check, after);
}
