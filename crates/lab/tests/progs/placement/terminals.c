/* Asks three times whether its standard error is a terminal, then puts the slave of a new
 * pseudo-terminal in its place and asks again; prints the four answers on one line
 * ("terminals: 0 0 0 1" when standard error was not one), then exits 0. Run placed at its
 * exec, home answers the first question; the next two may be answered where it runs, but
 * not the last, after the descriptor changed. */
#define _XOPEN_SOURCE 600
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(void) {
    int before[3];
    for (int i = 0; i < 3; i++)
        before[i] = isatty(2);
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) {
        perror("posix_openpt");
        return 1;
    }
    const char *name = ptsname(master);
    int slave = name ? open(name, O_RDWR | O_NOCTTY) : -1;
    if (slave < 0 || dup2(slave, 2) != 2) {
        perror("the pseudo-terminal's slave");
        return 1;
    }
    printf("terminals: %d %d %d %d\n", before[0], before[1], before[2], isatty(2));
    return 0;
}
