/* ioctls.c: every ioctl request the remote forwards, called at home and again at a remote,
 * on the terminal (stdin), on a pty master of its own and on a socket pair. Each call's buffer
 * has guard bytes after the size the kernel's definition gives: a forwarded call must leave
 * them as they were, leave what the kernel only reads unchanged, and give the same result
 * (return value, errno, bytes written) as at home. Then requests the table does not know,
 * which take the process home, and must give the results they gave at home.
 *
 * Steps, each ended by a line the test types once it has done its part:
 *   1. at home: every call, results kept; prints "ready"            (the test moves it)
 *   2. the same calls, compared with step 1; prints "forwarded"     (the test moves it again)
 *   3. TIOCGDEV, unknown to the table, compared; prints "unknown"   (the test moves it again)
 *   4. a request no kernel defines, compared; prints "undefined"
 *   5. prints PASS, or FAIL lines as they came, and exits 0 or 1.
 * Only the kernel's headers describe the structures: glibc's struct termios is not the
 * kernel's. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asm/sockios.h>
#include <asm/termios.h>

int ioctl(int fd, unsigned long request, ...);

#define MAX_ARG 64
#define GUARD 64
#define PATTERN 0xa5
#define MAX_CALLS 64
/* A request no kernel defines: _IOR('T', 0xee, int). */
#define UNDEFINED 0x800454eeUL

struct result {
    const char *name;
    long ret;
    int err;
    size_t size;
    unsigned char data[MAX_ARG];
};

static struct result results[2][MAX_CALLS];
static int counts[2];
static int failures;

static void fail(const char *what, const char *name)
{
    printf("FAIL %s: %s\n", name, what);
    failures++;
}

/* Calls `request` on `fd`. With a `size`, the argument points at a buffer of that many bytes
 * followed by guard bytes, holding `in` (what the kernel reads), or the guard pattern where
 * the kernel writes (`in` NULL); without, the argument is `value`. Keeps the result in
 * `round` and returns the bytes the kernel wrote. */
static const void *call(int round, const char *name, int fd, unsigned long request,
                        size_t size, const void *in, unsigned long value)
{
    unsigned char buf[MAX_ARG + GUARD], before[MAX_ARG + GUARD];
    struct result *r = &results[round][counts[round]++];
    memset(buf, PATTERN, sizeof buf);
    if (in)
        memcpy(buf, in, size);
    memcpy(before, buf, sizeof buf);
    errno = 0;
    r->name = name;
    r->ret = size ? ioctl(fd, request, buf) : ioctl(fd, request, value);
    r->err = r->ret < 0 ? errno : 0;
    r->size = size;
    for (size_t i = size; i < sizeof buf; i++) {
        if (buf[i] != PATTERN) {
            printf("FAIL %s: guard byte %zu of a %zu-byte argument was written\n", name, i, size);
            failures++;
            break;
        }
    }
    if (in && memcmp(buf, before, size) != 0)
        fail("the bytes the kernel only reads changed", name);
    memcpy(r->data, buf, size);
    return r->data;
}

#define GET(request, fd, type) call(round, #request, fd, request, sizeof(type), NULL, 0)
#define SET(request, fd, type, in) call(round, #request, fd, request, sizeof(type), in, 0)
#define VALUE(request, fd, value) call(round, #request, fd, request, 0, NULL, value)

/* Every forwarded request once. Set requests are given what the matching get returned, so
 * the terminal stays as it was; TIOCNOTTY goes to the pty master, which is not the process's
 * terminal (on the terminal it would take it from the process's home shell). */
static void forwarded(int round, int tty, int master, int sock)
{
    static const int zero = 0;
    int pid = getpid();
    const void *termios = GET(TCGETS, tty, struct termios);
    SET(TCSETS, tty, struct termios, termios);
    SET(TCSETSW, tty, struct termios, termios);
    SET(TCSETSF, tty, struct termios, termios);
    const void *termios2 = GET(TCGETS2, tty, struct termios2);
    SET(TCSETS2, tty, struct termios2, termios2);
    SET(TCSETSW2, tty, struct termios2, termios2);
    SET(TCSETSF2, tty, struct termios2, termios2);
    const void *termio = GET(TCGETA, tty, struct termio);
    SET(TCSETA, tty, struct termio, termio);
    SET(TCSETAW, tty, struct termio, termio);
    SET(TCSETAF, tty, struct termio, termio);
    VALUE(TCSBRK, tty, 1);
    VALUE(TCSBRKP, tty, 0);
    VALUE(TCXONC, tty, TCOON);
    VALUE(TCFLSH, tty, TCIFLUSH);
    const void *winsize = GET(TIOCGWINSZ, tty, struct winsize);
    SET(TIOCSWINSZ, tty, struct winsize, winsize);
    const void *pgrp = GET(TIOCGPGRP, tty, int);
    SET(TIOCSPGRP, tty, int, pgrp);
    GET(TIOCGSID, tty, int);
    VALUE(TIOCSCTTY, tty, 0);
    VALUE(TIOCEXCL, tty, 0);
    GET(TIOCGEXCL, tty, int);
    VALUE(TIOCNXCL, tty, 0);
    GET(TIOCGEXCL, tty, int);
    const void *ldisc = GET(TIOCGETD, tty, int);
    SET(TIOCSETD, tty, int, ldisc);
    GET(TIOCMGET, tty, int);
    SET(TIOCMSET, tty, int, &zero);
    SET(TIOCMBIS, tty, int, &zero);
    SET(TIOCMBIC, tty, int, &zero);
    GET(TIOCOUTQ, tty, int);
    GET(FIONREAD, tty, int);
    SET(FIONBIO, tty, int, &zero);
    SET(FIOASYNC, tty, int, &zero);
    VALUE(FIOCLEX, tty, 0);
    VALUE(FIONCLEX, tty, 0);
    VALUE(TIOCNOTTY, master, 0);
    SET(TIOCPKT, master, int, &zero);
    GET(TIOCGPKT, master, int);
    GET(TIOCGPTN, master, unsigned int);
    SET(TIOCSPTLCK, master, int, &zero);
    GET(TIOCGPTLCK, master, int);
    VALUE(TIOCGPTPEER, master, O_RDWR | O_NOCTTY);
    /* The peer it opened gets the same number in both rounds only if it is closed. */
    long peer = results[round][counts[round] - 1].ret;
    if (peer >= 0)
        close((int)peer);
    SET(FIOSETOWN, sock, int, &pid);
    GET(FIOGETOWN, sock, int);
    GET(FIONREAD, sock, int);
}

/* Compares the last `n` calls of round 1 with round 0's. */
static void compare(int n)
{
    for (int i = counts[1] - n; i < counts[1]; i++) {
        struct result *home = &results[0][i], *here = &results[1][i];
        if (home->ret != here->ret || home->err != here->err ||
            memcmp(home->data, here->data, home->size) != 0) {
            printf("FAIL %s: returned %ld (errno %d), at home %ld (errno %d)\n", here->name,
                   here->ret, here->err, home->ret, home->err);
            failures++;
        }
    }
}

static void step_done(const char *what)
{
    char line[256];
    printf("%s\n", what);
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) {
        printf("FAIL: no line after %s\n", what);
        _exit(1);
    }
}

int main(void)
{
    int tty = 0, sock[2];
    int master = open("/dev/ptmx", O_RDWR | O_NOCTTY);
    if (master < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sock) != 0 || write(sock[1], "bytes", 5) != 5) {
        perror("FAIL setup");
        return 1;
    }
    int round = 0;
    forwarded(round, tty, master, sock[0]);
    GET(TIOCGDEV, tty, unsigned int);
    GET(UNDEFINED, tty, int);
    int at_home = counts[0];
    step_done("ready");

    round = 1;
    forwarded(round, tty, master, sock[0]);
    compare(counts[1]);
    printf("%d forwarded calls compared\n", counts[1]);
    step_done("forwarded");

    GET(TIOCGDEV, tty, unsigned int);
    compare(1);
    step_done("unknown");

    GET(UNDEFINED, tty, int);
    compare(1);
    if (counts[1] != at_home)
        fail("the rounds made different calls", "main");
    step_done("undefined");
    printf(failures ? "FAIL: %d\n" : "PASS\n", failures);
    return failures != 0;
}
