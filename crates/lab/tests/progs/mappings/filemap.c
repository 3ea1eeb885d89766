/* File mappings that must stay file mappings when the process moves.
 *
 * Usage: filemap DATA UNLINKED. DATA holds 4 pages, UNLINKED 2, each page filled with one
 * letter by the test. DATA is mapped private and writable and page 1 is written ('W');
 * UNLINKED is mapped private read-only, then unlinked, and no descriptor is kept: only the
 * mapping holds it. Prints "ready", then answers each line of stdin:
 *   check  "pages: ABCD unlinked: XY" (the first byte of each page)
 *   maps   the maps lines of both areas ("map: PERMS OFFSET NAME") and the size of the
 *          DATA area's anonymous (written) memory from smaps ("written: N kB")
 *   end    exits 0
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096

static char *map_file(const char *path, int pages, int prot) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        perror(path);
        exit(2);
    }
    char *at = mmap(NULL, pages * PAGE, prot, MAP_PRIVATE, fd, 0);
    if (at == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    close(fd);
    return at;
}

/* Print the maps line of the area at `at` and, with `written`, its Anonymous: size. */
static void show_area(char *at, int written) {
    char want[32], line[512];
    snprintf(want, sizeof want, "%lx-", (unsigned long)at);
    FILE *smaps = fopen("/proc/self/smaps", "r");
    int in_area = 0;
    while (smaps && fgets(line, sizeof line, smaps)) {
        if (strncmp(line, want, strlen(want)) == 0) {
            char perms[8], offset[32], dev[16], inode[32], name[400] = "";
            sscanf(line, "%*s %7s %31s %15s %31s %399[^\n]", perms, offset, dev, inode, name);
            printf("map: %s %s %s\n", perms, offset, name + strspn(name, " "));
            in_area = 1;
        } else if (in_area && written && strncmp(line, "Anonymous:", 10) == 0) {
            printf("written: %ld kB\n", strtol(line + 10, NULL, 10));
            in_area = 0;
        } else if (strchr(line, '-') && strchr(line, '-') < strchr(line, ' ')) {
            in_area = 0;
        }
    }
    if (smaps)
        fclose(smaps);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: filemap DATA UNLINKED\n");
        return 2;
    }
    char *data = map_file(argv[1], 4, PROT_READ | PROT_WRITE);
    char *gone = map_file(argv[2], 2, PROT_READ);
    if (unlink(argv[2]) != 0) {
        perror("unlink");
        return 2;
    }
    memset(data + PAGE, 'W', PAGE);
    printf("ready\n");
    fflush(stdout);
    char cmd[64];
    while (fgets(cmd, sizeof cmd, stdin)) {
        if (strcmp(cmd, "check\n") == 0) {
            printf("pages: %c%c%c%c unlinked: %c%c\n", data[0], data[PAGE], data[2 * PAGE],
                   data[3 * PAGE], gone[0], gone[PAGE]);
        } else if (strcmp(cmd, "maps\n") == 0) {
            show_area(data, 1);
            show_area(gone, 0);
        } else if (strcmp(cmd, "end\n") == 0) {
            return 0;
        }
        fflush(stdout);
    }
    return 1;
}
