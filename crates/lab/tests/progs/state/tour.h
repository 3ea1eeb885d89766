/*
 * The tour every program of this suite takes (see tests/state.rs): at each stop (home, out,
 * on, home again) the test writes "check NAME", and "end" once done. At each, the program
 * checks its state and prints "NAME ok" or "NAME FAIL: why", then "checked NAME".
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* One line from stdin, a byte at a time so that nothing past it is read. */
static inline int read_line(char *line, size_t cap) {
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

/* Serves the tour: `check(name, why, cap)` returns 0 or why the state is wrong; `after`, if
 * not NULL, runs after each check (to change the state away from home, say). Returns the exit
 * status: 0 at "end", 1 if stdin ends first. */
static inline int tour(const char *(*check)(const char *name, char *why, size_t cap),
                       void (*after)(const char *name)) {
    char line[128], why[256];
    while (read_line(line, sizeof line) == 0) {
        if (strcmp(line, "end") == 0)
            return 0;
        char name[128];
        snprintf(name, sizeof name, "%s", line + strlen("check "));
        const char *failed = check(name, why, sizeof why);
        if (failed)
            printf("%s FAIL: %s\n", name, failed);
        else
            printf("%s ok\n", name);
        if (after)
            after(name);
        printf("checked %s\n", name);
        fflush(stdout);
    }
    return 1;
}
