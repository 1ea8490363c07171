// Host changes racing the mount's lookups of the same name (protocol/notify-ring.md, "Races").
//
// usage: lookuprace SOURCE MOUNT TRIALS
// Two scenarios, TRIALS times each, with two threads stat()ing the name through MOUNT in a tight
// loop while the host changes it:
//   create: the name is missing (the mount caches that) and the host creates it;
//   chmod:  the host creates the file, the mount looks it up for the first time, the host chmods.
// Every change must be visible through MOUNT within 200 ms. Prints one PASS/FAIL line per
// scenario; exits non-zero on a failure.
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char probed[512];
static volatile int stop_probing;

static void *probe(void *unused) {
    struct stat st;
    while (!stop_probing) stat(probed, &st);
    return unused;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

// Runs one scenario; returns how many changes stayed invisible for 200 ms.
static int scenario(const char *source, const char *mount, const char *name, int trials, int chmod_case) {
    char dir[512], host[512];
    snprintf(dir, sizeof dir, "%s/%s", source, name);
    mkdir(dir, 0755);
    int stale = 0;
    for (int i = 0; i < trials; i++) {
        snprintf(probed, sizeof probed, "%s/%s/f%d", mount, name, i);
        snprintf(host, sizeof host, "%s/%s/f%d", source, name, i);
        if (chmod_case) close(open(host, O_CREAT | O_WRONLY, 0600));
        stop_probing = 0;
        pthread_t threads[2];
        for (int k = 0; k < 2; k++) pthread_create(&threads[k], NULL, probe, NULL);
        usleep(rand() % 500);
        if (chmod_case) chmod(host, 0640); else close(open(host, O_CREAT | O_WRONLY, 0644));
        double deadline = now() + 0.2;
        int seen = 0;
        struct stat st;
        while (!seen && now() < deadline)
            seen = stat(probed, &st) == 0 && (!chmod_case || (st.st_mode & 0777) == 0640);
        stale += !seen;
        stop_probing = 1;
        for (int k = 0; k < 2; k++) pthread_join(threads[k], NULL);
    }
    return stale;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: lookuprace SOURCE MOUNT TRIALS\n"); return 2; }
    int trials = atoi(argv[3]), failed = 0;
    const char *names[2] = {"create", "chmod"};
    for (int c = 0; c < 2; c++) {
        int stale = scenario(argv[1], argv[2], names[c], trials, c);
        if (stale) printf("FAIL %s: %d of %d changes racing a lookup not visible within 200 ms\n", names[c], stale, trials);
        else printf("PASS %s: %d changes racing a lookup, all visible\n", names[c], trials);
        failed |= stale != 0;
    }
    return failed;
}
