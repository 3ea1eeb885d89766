/* Register and signal state across moves.
 *
 * Usage: state FILE. Three rounds; round K prints "computing K", then runs a busy loop in
 * one asm block with x87 st0-st7, SSE/AVX ymm0-ymm15, MXCSR and the x87 control word all
 * holding known values, and checks them after the loop: a move during the loop must carry
 * them. SIGALRM ticks from setitimer(ITIMER_REAL) interrupt the loop; the handler runs on
 * an alternate stack (sigaltstack, SA_ONSTACK). After each round the program checks that
 * ticks arrived, that the alternate stack is still set, and writes the round to FILE,
 * opened before the first move; then it reads one line from stdin (the test sends it once
 * the move is done) and sends datagrams with sendmmsg over a socket pair made at the start.
 * ITIMER_VIRTUAL and ITIMER_PROF, set once at the start (at home), tick all along: after
 * each gate, a busy loop, run entirely where the move put the program, must see both
 * tick within about 2 s of CPU time (these timers count the process's CPU time, so they must
 * move with it). At the end it reads FILE back. Every check prints PASS or FAIL and the output holds no counts or times;
 * exit 0 if all passed, 1 if not.
 *
 * Built with -mavx2 (the asm uses AVX); also built -static.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* dec/jnz iterations of one busy loop: a quarter to half a second. */
#define SPIN 700000000UL
#define ALTSTACK_SIZE (64 * 1024)

static char altstack[ALTSTACK_SIZE];
static volatile sig_atomic_t ticks;
static volatile sig_atomic_t ticks_off_altstack;
static volatile sig_atomic_t virtual_ticks, prof_ticks;
static int failures;

static void on_alarm(int sig) {
    char here;
    (void)sig;
    if (&here < altstack || &here >= altstack + ALTSTACK_SIZE)
        ticks_off_altstack++;
    ticks++;
}

static void on_vtalrm(int sig) { (void)sig; virtual_ticks++; }
static void on_prof(int sig) { (void)sig; prof_ticks++; }

/* Computes, without system calls, until both CPU-time timers have ticked since `virtual_before`
 * and `prof_before`, or for about 2 s of CPU time at most. A bound on work rather than a
 * fixed amount: on a loaded VM the ticks stolen by the hypervisor are not charged to us, so a
 * fixed short loop may see none. Returns whether both ticked. */
static int busy_until_cpu_timers_tick(sig_atomic_t virtual_before, sig_atomic_t prof_before) {
    for (volatile unsigned long n = 0; n < 1200000000UL; n++)
        if (virtual_ticks > virtual_before && prof_ticks > prof_before)
            return 1;
    return 0;
}

/* Prints one check's result; round 0 is the end of the program. */
static void check(int round, const char *what, int ok) {
    if (round > 0)
        printf("round %d: ", round);
    printf("%s %s\n", what, ok ? "PASS" : "FAIL");
    if (!ok)
        failures++;
}

static void gate(void) {
    char c;
    do {
        if (read(0, &c, 1) != 1) {
            printf("FAIL: gate\n");
            exit(1);
        }
    } while (c != '\n');
}

struct regs {
    uint64_t ymm[16][4];
    double x87[8];
    uint32_t mxcsr;
    uint16_t fcw;
};

/* Loads `in`, spins, stores into `out`; nothing but the loop counter changes in between. */
static void spin_with(const struct regs *in, struct regs *out) {
    unsigned long n = SPIN;
    __asm__ volatile(
        "ldmxcsr %c[mx](%[in])\n\t"
        "fldcw %c[cw](%[in])\n\t"
        "vmovdqu 0(%[in]), %%ymm0\n\t"
        "vmovdqu 32(%[in]), %%ymm1\n\t"
        "vmovdqu 64(%[in]), %%ymm2\n\t"
        "vmovdqu 96(%[in]), %%ymm3\n\t"
        "vmovdqu 128(%[in]), %%ymm4\n\t"
        "vmovdqu 160(%[in]), %%ymm5\n\t"
        "vmovdqu 192(%[in]), %%ymm6\n\t"
        "vmovdqu 224(%[in]), %%ymm7\n\t"
        "vmovdqu 256(%[in]), %%ymm8\n\t"
        "vmovdqu 288(%[in]), %%ymm9\n\t"
        "vmovdqu 320(%[in]), %%ymm10\n\t"
        "vmovdqu 352(%[in]), %%ymm11\n\t"
        "vmovdqu 384(%[in]), %%ymm12\n\t"
        "vmovdqu 416(%[in]), %%ymm13\n\t"
        "vmovdqu 448(%[in]), %%ymm14\n\t"
        "vmovdqu 480(%[in]), %%ymm15\n\t"
        "fldl 512(%[in])\n\t"
        "fldl 520(%[in])\n\t"
        "fldl 528(%[in])\n\t"
        "fldl 536(%[in])\n\t"
        "fldl 544(%[in])\n\t"
        "fldl 552(%[in])\n\t"
        "fldl 560(%[in])\n\t"
        "fldl 568(%[in])\n\t"
        "1: dec %[n]\n\t"
        "jnz 1b\n\t"
        /* st0 is the last value loaded: pop in reverse. */
        "fstpl 568(%[out])\n\t"
        "fstpl 560(%[out])\n\t"
        "fstpl 552(%[out])\n\t"
        "fstpl 544(%[out])\n\t"
        "fstpl 536(%[out])\n\t"
        "fstpl 528(%[out])\n\t"
        "fstpl 520(%[out])\n\t"
        "fstpl 512(%[out])\n\t"
        "vmovdqu %%ymm0, 0(%[out])\n\t"
        "vmovdqu %%ymm1, 32(%[out])\n\t"
        "vmovdqu %%ymm2, 64(%[out])\n\t"
        "vmovdqu %%ymm3, 96(%[out])\n\t"
        "vmovdqu %%ymm4, 128(%[out])\n\t"
        "vmovdqu %%ymm5, 160(%[out])\n\t"
        "vmovdqu %%ymm6, 192(%[out])\n\t"
        "vmovdqu %%ymm7, 224(%[out])\n\t"
        "vmovdqu %%ymm8, 256(%[out])\n\t"
        "vmovdqu %%ymm9, 288(%[out])\n\t"
        "vmovdqu %%ymm10, 320(%[out])\n\t"
        "vmovdqu %%ymm11, 352(%[out])\n\t"
        "vmovdqu %%ymm12, 384(%[out])\n\t"
        "vmovdqu %%ymm13, 416(%[out])\n\t"
        "vmovdqu %%ymm14, 448(%[out])\n\t"
        "vmovdqu %%ymm15, 480(%[out])\n\t"
        "stmxcsr %c[mx](%[out])\n\t"
        "fnstcw %c[cw](%[out])\n\t"
        "vzeroupper\n\t"
        : [n] "+r"(n)
        : [in] "r"(in), [out] "r"(out), [mx] "i"(offsetof(struct regs, mxcsr)),
          [cw] "i"(offsetof(struct regs, fcw))
        : "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
          "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "st",
          "st(1)", "st(2)", "st(3)", "st(4)", "st(5)", "st(6)", "st(7)");
}

/* Back to the ABI's control words, for the C code that follows. */
static void default_control(void) {
    uint32_t mxcsr = 0x1f80;
    uint16_t fcw = 0x037f;
    __asm__ volatile("ldmxcsr %0\n\tfldcw %1" : : "m"(mxcsr), "m"(fcw));
}

static void fill(struct regs *r, int round) {
    uint64_t x = 0x9e3779b97f4a7c15ULL * (uint64_t)round;
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 4; j++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            r->ymm[i][j] = x;
        }
    for (int i = 0; i < 8; i++)
        r->x87[i] = round * 1000.0 + i + 0.125;
    /* Round toward zero, flush to zero, all exceptions masked. */
    r->mxcsr = 0xff80;
    /* Round toward zero, 53-bit precision, all exceptions masked. */
    r->fcw = 0x0e7f;
}

/* Sends three datagrams with sendmmsg (more calls for what a signal cut short, as the call
 * may send fewer) and reads them back: in order, whole, and each msg_len set. */
static int sendmmsg_works(int round, const int pair[2]) {
    char text[3][32];
    struct iovec iov[3];
    struct mmsghdr msgs[3];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < 3; i++) {
        int n = snprintf(text[i], sizeof text[i], "round %d, message %d", round, i);
        iov[i] = (struct iovec){.iov_base = text[i], .iov_len = (size_t)n};
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    for (int sent = 0; sent < 3;) {
        int n = sendmmsg(pair[0], msgs + sent, 3 - sent, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        sent += n;
    }
    for (int i = 0; i < 3; i++) {
        char got[32];
        ssize_t n = recv(pair[1], got, sizeof got, 0);
        if (n != (ssize_t)iov[i].iov_len || memcmp(got, text[i], (size_t)n) != 0 ||
            msgs[i].msg_len != iov[i].iov_len)
            return 0;
    }
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: state FILE\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    FILE *file = fopen(argv[1], "w+");
    if (!file) {
        perror(argv[1]);
        return 2;
    }
    setvbuf(file, NULL, _IONBF, 0);
    fprintf(file, "opened before the first move\n");

    int pair[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, pair) != 0) {
        perror("socketpair");
        return 2;
    }

    stack_t ss = {.ss_sp = altstack, .ss_size = ALTSTACK_SIZE, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0) {
        perror("sigaltstack");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGALRM, &sa, NULL) != 0) {
        perror("sigaction");
        return 2;
    }
    struct itimerval every = {.it_interval = {0, 5000}, .it_value = {0, 5000}};
    if (setitimer(ITIMER_REAL, &every, NULL) != 0) {
        perror("setitimer");
        return 2;
    }
    sa.sa_flags = SA_RESTART;
    sa.sa_handler = on_vtalrm;
    sigaction(SIGVTALRM, &sa, NULL);
    sa.sa_handler = on_prof;
    sigaction(SIGPROF, &sa, NULL);
    struct itimerval cpu = {.it_interval = {0, 10000}, .it_value = {0, 10000}};
    if (setitimer(ITIMER_VIRTUAL, &cpu, NULL) != 0 || setitimer(ITIMER_PROF, &cpu, NULL) != 0) {
        perror("setitimer");
        return 2;
    }

    int ticks_ok = 1;
    for (int round = 1; round <= 3; round++) {
        struct regs in, out;
        fill(&in, round);
        memset(&out, 0, sizeof out);
        printf("computing %d\n", round);
        sig_atomic_t ticks_before = ticks;
        spin_with(&in, &out);
        default_control();
        check(round, "ymm0-15", memcmp(in.ymm, out.ymm, sizeof in.ymm) == 0);
        check(round, "x87 st0-7", memcmp(in.x87, out.x87, sizeof in.x87) == 0);
        check(round, "mxcsr", in.mxcsr == out.mxcsr);
        check(round, "x87 control word", in.fcw == out.fcw);
        /* The loop runs about half a second: at 5 ms a tick, many must have come. */
        if (ticks == ticks_before)
            ticks_ok = 0;
        stack_t now;
        int got = sigaltstack(NULL, &now);
        check(round, "sigaltstack",
              got == 0 && now.ss_sp == altstack && now.ss_size == ALTSTACK_SIZE &&
                  now.ss_flags == 0);
        fprintf(file, "round %d done\n", round);
        gate();
        check(round, "sendmmsg", sendmmsg_works(round, pair));
        check(round, "CPU-time timers tick after the gate",
              busy_until_cpu_timers_tick(virtual_ticks, prof_ticks));
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    setitimer(ITIMER_VIRTUAL, &off, NULL);
    setitimer(ITIMER_PROF, &off, NULL);

    char text[256] = {0};
    rewind(file);
    size_t n = fread(text, 1, sizeof text - 1, file);
    const char *want = "opened before the first move\nround 1 done\nround 2 done\nround 3 done\n";
    check(0, "file", n == strlen(want) && strcmp(text, want) == 0);
    printf("ticks %s\n", ticks_ok ? "ok" : "FAIL: a round saw none");
    if (!ticks_ok)
        failures++;
    check(0, "handler on the alternate stack", ticks_off_altstack == 0);
    printf("%s\n", failures ? "FAIL" : "PASS");
    return failures ? 1 : 0;
}
