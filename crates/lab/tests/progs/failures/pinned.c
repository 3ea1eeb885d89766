/* pinned: holds one thing that keeps a process from moving (MODE: shared-anon, shared-file,
 * mlock, sysv), says "ready", waits until GOFILE exists, checks its memory and prints
 * "done MODE". usage: pinned MODE GOFILE */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

#define LEN 4096

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: pinned MODE GOFILE\n");
        return 2;
    }
    const char *mode = argv[1];
    char *mem = MAP_FAILED;
    if (strcmp(mode, "shared-anon") == 0) {
        mem = mmap(0, LEN, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    } else if (strcmp(mode, "shared-file") == 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s.map", argv[2]);
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || ftruncate(fd, LEN) != 0) {
            perror("pinned: map file");
            return 2;
        }
        mem = mmap(0, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
    } else if (strcmp(mode, "mlock") == 0) {
        mem = mmap(0, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem != MAP_FAILED && mlock(mem, LEN) != 0) {
            perror("pinned: mlock");
            return 2;
        }
    } else if (strcmp(mode, "sysv") == 0) {
        int id = shmget(IPC_PRIVATE, LEN, IPC_CREAT | 0600);
        if (id >= 0) {
            void *at = shmat(id, 0, 0);
            /* Removed now, gone once detached: nothing outlives the test. */
            shmctl(id, IPC_RMID, 0);
            if (at != (void *)-1)
                mem = at;
        }
    } else {
        fprintf(stderr, "pinned: unknown mode %s\n", mode);
        return 2;
    }
    if (mem == MAP_FAILED) {
        perror("pinned: setting up");
        return 2;
    }
    strcpy(mem, mode);
    printf("ready\n");
    fflush(stdout);
    while (access(argv[2], F_OK) != 0)
        usleep(20000);
    if (strcmp(mem, mode) != 0) {
        printf("FAIL: memory changed\n");
        return 1;
    }
    printf("done %s\n", mode);
    return 0;
}
