/*
 * soak.c - leak check for the fmcache preload library.
 *
 *   soak DIR ITERATIONS
 *
 * Each iteration: stat, open+read+close of every regular file directly in
 * DIR, opendir+readdir+closedir of DIR, and a stat of a missing name.
 * Prints the checksum of everything read, then the descriptors open at the
 * end (the entries of /proc/self/fd, less the one listing them) and the
 * resident pages after 1,000 iterations (the first, for fewer) and at the end, so a caller
 * can compare native and served runs and see growth within one process.
 *
 * Build: gcc -O1 -Wall -o soak soak.c
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static long resident_pages(void) {
    long size = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &size, &rss) != 2) rss = -1;
    fclose(f);
    return rss;
}

static int open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    struct dirent *e;
    if (!d) return -1;
    while ((e = readdir(d))) {
        if (e->d_name[0] != '.') n++;
    }
    closedir(d);
    return n - 1; /* the listing's own descriptor */
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: soak DIR ITERATIONS\n");
        return 2;
    }
    const char *dir = argv[1];
    long iters = atol(argv[2]);
    unsigned long sum = 0;
    long rss_first = 0;
    char path[4096], buf[4096];
    struct stat st;
    for (long i = 0; i < iters; i++) {
        DIR *d = opendir(dir);
        struct dirent *e;
        if (!d) {
            perror("opendir");
            return 1;
        }
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) continue;
            ssize_t r;
            while ((r = read(fd, buf, sizeof buf)) > 0)
                for (ssize_t k = 0; k < r; k++) sum = sum * 31 + (unsigned char)buf[k];
            close(fd);
        }
        closedir(d);
        snprintf(path, sizeof path, "%s/no-such-name", dir);
        if (stat(path, &st) == 0) sum++;
        /* After warm-up: fixed pools (served DIR slots) are touched by then. */
        if (i == (iters > 1000 ? 999 : 0)) rss_first = resident_pages();
    }
    printf("sum %lu\nfds %d\n", sum, open_fds());
    printf("rss_first %ld rss_end %ld\n", rss_first, resident_pages());
    return 0;
}
