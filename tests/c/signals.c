/*
 * signals.c - file-system calls from a signal handler that interrupts the
 * main thread while it is inside the same calls (and so inside the
 * preload library's hooks).
 *
 *   signals SECONDS INTERVAL_US LISTFILE [MIN_RUNS]
 *
 * LISTFILE holds one path per line.  Before the timer starts the main
 * thread computes each path's answer: stat (every field but atime) and
 * open(O_RDONLY) + fstat (the same fields) + close, or the errnos.  Then
 * setitimer(ITIMER_REAL) fires every INTERVAL_US microseconds; the SIGALRM
 * handler takes the next path, computes its answer with the async-signal-
 * safe calls stat/open/fstat/close only, and compares it with the
 * precomputed one (no stdio, no allocation in the handler).  Meanwhile the
 * main thread loops over the list doing the same probes plus a read to EOF
 * (comparing too) for SECONDS seconds, and on (at most 120 s more) until
 * the handler ran MIN_RUNS times: a loaded machine delivers fewer signals,
 * as pending ones merge.
 *
 * Output (one line):
 *   handler=N during_call=M mismatches=X main=K main_mismatches=Y
 * during_call counts handler runs that interrupted the main thread between
 * entering and leaving one of its probes.  Exit 0 when both mismatch counts
 * are 0, else 1 (the first mismatching path is printed on a second line).
 *
 * Build: gcc -O1 -Wall -Wextra -Werror -o signals signals.c
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

struct fields {
	int err;
	uint64_t dev, ino, mode, nlink, uid, gid, rdev, size, blksize, blocks;
	int64_t mtime, mtime_ns, ctime, ctime_ns;
};

struct answer {
	struct fields st;   /* stat */
	struct fields fst;  /* open + fstat */
};

static void fill(struct fields *f, const struct stat *st)
{
	f->dev = st->st_dev;
	f->ino = st->st_ino;
	f->mode = st->st_mode;
	f->nlink = st->st_nlink;
	f->uid = st->st_uid;
	f->gid = st->st_gid;
	f->rdev = st->st_rdev;
	f->size = (uint64_t)st->st_size;
	f->blksize = (uint64_t)st->st_blksize;
	f->blocks = (uint64_t)st->st_blocks;
	f->mtime = st->st_mtim.tv_sec;
	f->mtime_ns = st->st_mtim.tv_nsec;
	f->ctime = st->st_ctim.tv_sec;
	f->ctime_ns = st->st_ctim.tv_nsec;
}

/* Async-signal-safe: stat, open, fstat, close, memset. */
static void answer(const char *path, struct answer *a)
{
	struct stat st;
	memset(a, 0, sizeof *a);
	if (stat(path, &st) != 0)
		a->st.err = errno;
	else
		fill(&a->st, &st);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		a->fst.err = errno;
		return;
	}
	if (fstat(fd, &st) != 0)
		a->fst.err = -errno;
	else
		fill(&a->fst, &st);
	close(fd);
}

static char **paths;
static struct answer *expected;
static size_t npaths;

static volatile sig_atomic_t in_call;
static volatile unsigned long handler_runs, during_call, mismatches;
static volatile long first_bad = -1;
static volatile unsigned long next_path;

static void on_alarm(int sig)
{
	(void)sig;
	int saved = errno;
	size_t i = next_path++ % npaths;
	struct answer a;
	answer(paths[i], &a);
	if (memcmp(&a, &expected[i], sizeof a) != 0) {
		mismatches++;
		if (first_bad < 0)
			first_bad = (long)i;
	}
	if (in_call)
		during_call++;
	handler_runs++;
	errno = saved;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc != 4 && argc != 5) {
		fprintf(stderr, "usage: signals SECONDS INTERVAL_US LISTFILE [MIN_RUNS]\n");
		return 2;
	}
	double seconds = strtod(argv[1], NULL);
	long interval = atol(argv[2]);
	unsigned long min_runs = argc == 5 ? strtoul(argv[4], NULL, 10) : 0;
	FILE *f = fopen(argv[3], "re");
	if (f == NULL || interval <= 0) {
		fprintf(stderr, "signals: bad arguments\n");
		return 2;
	}
	size_t cap = 0, lcap = 0;
	char *line = NULL;
	ssize_t len;
	while ((len = getline(&line, &lcap, f)) >= 0) {
		while (len > 0 && line[len - 1] == '\n')
			line[--len] = '\0';
		if (len == 0 || line[0] == '#')
			continue;
		if (npaths == cap) {
			cap = cap ? cap * 2 : 64;
			paths = realloc(paths, cap * sizeof *paths);
			if (paths == NULL)
				abort();
		}
		paths[npaths++] = strdup(line);
	}
	free(line);
	fclose(f);
	if (npaths == 0)
		return 2;
	expected = calloc(npaths, sizeof *expected);
	for (size_t i = 0; i < npaths; i++)
		answer(paths[i], &expected[i]);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval it = {{0, interval}, {0, interval}};
	setitimer(ITIMER_REAL, &it, NULL);

	static char buf[65536];
	unsigned long main_probes = 0, main_mismatches = 0;
	long main_bad = -1;
	double end = now() + seconds;
	for (;;) {
		double t = now();
		if ((t >= end && handler_runs >= min_runs) || t >= end + 120)
			break;
		for (size_t i = 0; i < npaths; i++) {
			struct answer a;
			in_call = 1;
			answer(paths[i], &a);
			int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
			if (fd >= 0) {
				while (read(fd, buf, sizeof buf) > 0)
					;
				close(fd);
			}
			in_call = 0;
			main_probes++;
			if (memcmp(&a, &expected[i], sizeof a) != 0) {
				main_mismatches++;
				if (main_bad < 0)
					main_bad = (long)i;
			}
		}
	}
	struct itimerval off = {{0, 0}, {0, 0}};
	setitimer(ITIMER_REAL, &off, NULL);

	printf("handler=%lu during_call=%lu mismatches=%lu main=%lu main_mismatches=%lu\n",
	       handler_runs, during_call, mismatches, main_probes, main_mismatches);
	if (first_bad >= 0)
		printf("handler mismatch: %s\n", paths[first_bad]);
	if (main_bad >= 0)
		printf("main mismatch: %s\n", paths[main_bad]);
	fflush(stdout);
	return mismatches || main_mismatches ? 1 : 0;
}
