/* Median wall time in microseconds of starting and reaping a program
 * (posix_spawn + waitpid), RUNS times, with extra environment entries.
 * usage: spawn RUNS "VAR=value VAR2=value" program [args...]  ("-": none) */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    int n = atoi(argv[1]);
    double *t = malloc(sizeof(double) * n);
    size_t k = 0, cap = 16;
    for (char **e = environ; *e; e++) cap++;
    char **envs = malloc(sizeof(char *) * (cap + 64));
    for (char **e = environ; *e; e++) envs[k++] = *e;
    for (char *tok = strcmp(argv[2], "-") ? strtok(strdup(argv[2]), " ") : NULL; tok && k < cap + 63;
         tok = strtok(NULL, " "))
        envs[k++] = tok;
    envs[k] = NULL;
    for (int i = 0; i < n; i++) {
        struct timespec a, b;
        pid_t p;
        int st;
        clock_gettime(CLOCK_MONOTONIC, &a);
        if (posix_spawn(&p, argv[3], NULL, NULL, argv + 3, envs)) return 1;
        waitpid(p, &st, 0);
        clock_gettime(CLOCK_MONOTONIC, &b);
        t[i] = (b.tv_sec - a.tv_sec) * 1e6 + (b.tv_nsec - a.tv_nsec) / 1e3;
    }
    qsort(t, n, sizeof(double), cmp);
    printf("%.0f\n", t[n / 2]);
    return 0;
}
