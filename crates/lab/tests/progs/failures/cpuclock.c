/* cpuclock: a process's CPU time continues where it was, away and back. It burns CPU at
 * home, says "ready" and waits until GO1 exists (it is moved away meanwhile); there it reads
 * its CPU time, burns more, says "away" and waits until GO2 exists (it is moved home); then
 * it reads it again. Each reading takes clock_gettime(CLOCK_PROCESS_CPUTIME_ID), getrusage
 * (RUSAGE_SELF) and times(), which must agree and never go back, and each burn must add at
 * least 150 ms. Prints the readings and "PASS", or "FAIL: why". usage: cpuclock GO1 GO2 */
#include <stdio.h>
#include <sys/resource.h>
#include <sys/times.h>
#include <time.h>
#include <unistd.h>

static double clock_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static double rusage_s(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec +
           u.ru_stime.tv_usec / 1e6;
}

static double times_s(void) {
    struct tms t;
    times(&t);
    return (double)(t.tms_utime + t.tms_stime) / sysconf(_SC_CLK_TCK);
}

static void burn(double seconds) {
    double until = clock_s() + seconds;
    volatile unsigned long x = 0;
    while (clock_s() < until)
        for (int i = 0; i < 100000; i++)
            x += i;
}

static void wait_for(const char *path) {
    while (access(path, F_OK) != 0)
        usleep(20000);
}

static double last;
static int failed;

/* One reading, named: the three agree (to a tick and a bit) and none is below the last. */
static double reading(const char *name) {
    double c = clock_s(), r = rusage_s(), t = times_s();
    printf("%s clock %.3f rusage %.3f times %.3f\n", name, c, r, t);
    if (c + 0.001 < last || r + 0.03 < last || t + 0.03 < last) {
        printf("FAIL: %s went back below %.3f\n", name, last);
        failed = 1;
    }
    if (r > c + 0.03 || r + 0.03 < c || t > c + 0.03 || t + 0.03 < c) {
        printf("FAIL: %s: the three disagree\n", name);
        failed = 1;
    }
    last = c;
    return c;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: cpuclock GO1 GO2\n");
        return 2;
    }
    burn(0.2);
    double home = reading("home");
    printf("ready\n");
    fflush(stdout);
    wait_for(argv[1]);
    double arrived = reading("arrived");
    burn(0.2);
    double away = reading("away");
    if (away < arrived + 0.15) {
        printf("FAIL: the burn away added %.3f\n", away - arrived);
        failed = 1;
    }
    printf("away\n");
    fflush(stdout);
    wait_for(argv[2]);
    double back = reading("back");
    burn(0.2);
    double end = reading("end");
    if (end < back + 0.15 || arrived < home) {
        printf("FAIL: a burn was lost\n");
        failed = 1;
    }
    printf(failed ? "FAIL\n" : "PASS\n");
    return 0;
}
