/* For each ioctl request the remote forwards (crates/engine/src/ioctls.rs): its name, its
 * number in hex, and the size of what the kernel reads or writes through its argument, the
 * sizeof of the argument's type in the kernel's own UAPI headers (0 where the argument is a
 * value or unused). The unit test `the_table_matches_the_kernel_headers` compares it with
 * the table. No glibc terminal header here: its struct termios is not the kernel's. */
#include <stdio.h>

#include <asm/sockios.h>
#include <asm/termios.h>
#include <linux/posix_types.h>

#define VALUE(request) printf("%s %x 0\n", #request, (unsigned)(request))
#define POINTS_AT(request, type) \
    printf("%s %x %zu\n", #request, (unsigned)(request), sizeof(type))

int main(void)
{
    POINTS_AT(TCGETS, struct termios);
    POINTS_AT(TCSETS, struct termios);
    POINTS_AT(TCSETSW, struct termios);
    POINTS_AT(TCSETSF, struct termios);
    POINTS_AT(TCGETS2, struct termios2);
    POINTS_AT(TCSETS2, struct termios2);
    POINTS_AT(TCSETSW2, struct termios2);
    POINTS_AT(TCSETSF2, struct termios2);
    POINTS_AT(TCGETA, struct termio);
    POINTS_AT(TCSETA, struct termio);
    POINTS_AT(TCSETAW, struct termio);
    POINTS_AT(TCSETAF, struct termio);
    VALUE(TCSBRK);
    VALUE(TCSBRKP);
    VALUE(TCXONC);
    VALUE(TCFLSH);
    POINTS_AT(TIOCGWINSZ, struct winsize);
    POINTS_AT(TIOCSWINSZ, struct winsize);
    POINTS_AT(TIOCGPGRP, __kernel_pid_t);
    POINTS_AT(TIOCSPGRP, __kernel_pid_t);
    POINTS_AT(TIOCGSID, __kernel_pid_t);
    VALUE(TIOCSCTTY);
    VALUE(TIOCNOTTY);
    VALUE(TIOCEXCL);
    VALUE(TIOCNXCL);
    POINTS_AT(TIOCGEXCL, int);
    POINTS_AT(TIOCGETD, int);
    POINTS_AT(TIOCSETD, int);
    POINTS_AT(TIOCMGET, int);
    POINTS_AT(TIOCMSET, int);
    POINTS_AT(TIOCMBIS, int);
    POINTS_AT(TIOCMBIC, int);
    POINTS_AT(TIOCOUTQ, int);
    /* TIOCINQ is FIONREAD. */
    POINTS_AT(FIONREAD, int);
    POINTS_AT(TIOCPKT, int);
    POINTS_AT(TIOCGPKT, int);
    POINTS_AT(TIOCGPTN, unsigned int);
    POINTS_AT(TIOCSPTLCK, int);
    POINTS_AT(TIOCGPTLCK, int);
    VALUE(TIOCGPTPEER);
    POINTS_AT(FIONBIO, int);
    POINTS_AT(FIOASYNC, int);
    VALUE(FIOCLEX);
    VALUE(FIONCLEX);
    POINTS_AT(FIOSETOWN, int);
    POINTS_AT(FIOGETOWN, int);
    return 0;
}
