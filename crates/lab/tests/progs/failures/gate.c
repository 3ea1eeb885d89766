/* gate: makes system calls from the instruction the remote's supervisor injects its own calls
 * with (the first `syscall` instruction of the vdso), as a program that tries to step around
 * its sandbox would. Says "ready", waits until GOFILE exists (so that it runs wherever it was
 * moved meanwhile), then creates MARKER with openat and asks getpid, both through the gate,
 * and prints "openat=R getpid=R" with the raw results (a negative errno on failure). At home
 * both simply run; away they must be forwarded home or refused, never run where the process
 * is. Exits 0. usage: gate GOFILE MARKER */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The first `syscall` (0f 05) in the vdso's bytes: the instruction the guest picks. */
static void *find_gate(void) {
    unsigned char *vdso = (unsigned char *)getauxval(AT_SYSINFO_EHDR);
    for (int i = 0; vdso && i < 8192; i++)
        if (vdso[i] == 0x0f && vdso[i + 1] == 0x05)
            return vdso + i;
    return 0;
}

/* Runs system call `nr` from `gate`. On this kernel the gate's instruction is followed by
 * `leave`, some register clearing and `ret` (the fallback of a vdso clock function): so rbp
 * points at a two-word frame holding our rbp and the address to come back to. */
static long via_gate(void *gate, long nr, long a0, long a1, long a2, long a3) {
    long ret;
    void *frame[2];
    void *at = frame;
    register long r10 __asm__("r10") = a3;
    __asm__ volatile(
        "lea 1f(%%rip), %%r11\n\t"
        "mov %%rbp, 0(%[frame])\n\t"
        "mov %%r11, 8(%[frame])\n\t"
        "mov %%rsp, %%r12\n\t"
        "mov %[frame], %%rbp\n\t"
        "jmp *%[gate]\n"
        "1:\n\t"
        "mov %%r12, %%rsp\n\t"
        : "=a"(ret), "+r"(r10), "+D"(a0), "+S"(a1), "+d"(a2), [frame] "+c"(at)
        : "a"(nr), [gate] "b"(gate)
        : "r8", "r9", "r11", "r12", "memory");
    return ret;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: gate GOFILE MARKER\n");
        return 2;
    }
    void *gate = find_gate();
    if (!gate) {
        printf("FAIL: no syscall instruction in the vdso\n");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    while (access(argv[1], F_OK) != 0)
        usleep(20000);
    long fd = via_gate(gate, SYS_openat, AT_FDCWD, (long)argv[2], O_CREAT | O_WRONLY, 0600);
    long pid = via_gate(gate, SYS_getpid, 0, 0, 0, 0);
    printf("openat=%ld getpid=%ld\n", fd, pid);
    return 0;
}
