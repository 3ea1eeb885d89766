/* cmdline: /proc/self/cmdline, /proc/self/environ and /proc/PID/cmdline of its own PID read
 * what the program was started with, wherever it runs (the opens run in its shell at home
 * while it is away). Says "ready", then for each line "check NAME" it reads on stdin checks
 * all three and prints "checked NAME" after "NAME ok" or "NAME FAIL: why". Ends on "end".
 * usage: cmdline ARGS... (with RMOSIX_STATE=environ-check in its environment) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Reads a whole file into buf; returns its length or -1. */
static ssize_t slurp(const char *path, char *buf, size_t cap) {
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    size_t len = 0;
    ssize_t n;
    while ((n = read(fd, buf + len, cap - len)) > 0)
        len += n;
    close(fd);
    return n < 0 ? -1 : (ssize_t)len;
}

/* The command line as the kernel laid it out: each argument with its NUL. */
static size_t expected_cmdline(int argc, char **argv, char *out) {
    size_t len = 0;
    for (int i = 0; i < argc; i++) {
        size_t n = strlen(argv[i]) + 1;
        memcpy(out + len, argv[i], n);
        len += n;
    }
    return len;
}

static const char *check(int argc, char **argv) {
    static char want[65536], got[65536], path[64];
    size_t want_len = expected_cmdline(argc, argv, want);
    ssize_t len = slurp("/proc/self/cmdline", got, sizeof got);
    if (len != (ssize_t)want_len || memcmp(got, want, want_len) != 0)
        return "/proc/self/cmdline differs";
    snprintf(path, sizeof path, "/proc/%d/cmdline", getpid());
    len = slurp(path, got, sizeof got);
    if (len != (ssize_t)want_len || memcmp(got, want, want_len) != 0)
        return "/proc/PID/cmdline differs";
    len = slurp("/proc/self/environ", got, sizeof got - 1);
    if (len <= 0)
        return "/proc/self/environ is empty";
    got[len] = 0;
    const char *needle = "RMOSIX_STATE=environ-check";
    int found = 0;
    for (char *at = got; at < got + len; at += strlen(at) + 1)
        found |= strcmp(at, needle) == 0;
    if (!found)
        return "/proc/self/environ lacks RMOSIX_STATE";
    return 0;
}

int main(int argc, char **argv) {
    char line[256];
    printf("ready\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        if (strcmp(line, "end") == 0)
            return 0;
        const char *name = line + strlen("check ");
        const char *why = check(argc, argv);
        if (why)
            printf("%s FAIL: %s\n", name, why);
        else
            printf("%s ok\n", name);
        printf("checked %s\n", name);
        fflush(stdout);
    }
    return 1;
}
