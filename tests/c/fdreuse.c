/*
 * fdreuse.c - a program that closes every descriptor it inherited and then
 * reuses the numbers for files of its own, low ones as open(2) hands them
 * out and the highest ones by dup2(2) (as shells park their script and
 * saved descriptors high). Under a low RLIMIT_NOFILE a preloaded
 * library's own descriptor can only sit among these numbers.
 *
 *   fdreuse OUTDIR PATH...
 *
 * Closes descriptors 3 .. RLIMIT_NOFILE-1. Then, 3 rounds: opens
 * OUTDIR/f0 .. f5 (round 0 truncates, later rounds append), moves f0-f2
 * to the three highest numbers under the limit with dup2, writes one line
 * to each, closes them all. Before every open, dup2 and write it stats
 * and reads each PATH and stats a new missing name (the probes a recorder
 * journals). Prints each
 * file's size and FNV-1a 64 and each PATH's size, for comparison with a
 * native run.
 *
 * Build: gcc -O1 -Wall -Wextra -Werror -o fdreuse fdreuse.c
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILES 6
#define PARKED 3
#define ROUNDS 3

static uint64_t fnv_file(const char *p, long *size)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	unsigned char buf[4096];
	ssize_t n;
	int fd = open(p, O_RDONLY);
	*size = -1;
	if (fd < 0)
		return 0;
	*size = 0;
	while ((n = read(fd, buf, sizeof buf)) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			h ^= buf[i];
			h *= 0x100000001b3ULL;
		}
		*size += n;
	}
	close(fd);
	return h;
}

static char **paths;
static int npaths;

/* Stats and reads every PATH, and stats one name never probed before
 * (PATH0.<n>), so each call makes at least one new journal record. */
static void probe_all(void)
{
	static int fresh;
	struct stat st;
	char buf[4096];
	if (npaths > 0) {
		snprintf(buf, sizeof buf, "%s.%d", paths[0], fresh++);
		stat(buf, &st);
	}
	for (int i = 0; i < npaths; i++) {
		stat(paths[i], &st);
		int fd = open(paths[i], O_RDONLY);
		if (fd >= 0) {
			while (read(fd, buf, sizeof buf) > 0) {
			}
			close(fd);
		}
	}
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: fdreuse OUTDIR PATH...\n");
		return 2;
	}
	const char *out = argv[1];
	paths = argv + 2;
	npaths = argc - 2;
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	long lim = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 4096 ? 4096 : (long)rl.rlim_cur;
	for (long fd = 3; fd < lim; fd++)
		close((int)fd);
	int fds[FILES];
	int bad = 0;
	for (int r = 0; r < ROUNDS; r++) {
		for (int i = 0; i < FILES; i++) {
			char name[4096];
			snprintf(name, sizeof name, "%s/f%d", out, i);
			probe_all();
			fds[i] = open(name, O_WRONLY | O_CREAT | (r ? O_APPEND : O_TRUNC), 0644);
			if (fds[i] < 0)
				bad++;
		}
		for (int i = 0; i < PARKED; i++) {
			probe_all();
			int high = (int)lim - 1 - i;
			if (fds[i] >= 0 && dup2(fds[i], high) == high) {
				close(fds[i]);
				fds[i] = high;
			}
		}
		for (int i = 0; i < FILES; i++) {
			char line[64];
			int len = snprintf(line, sizeof line, "round %d file %d fd %s\n", r, i,
					   i < PARKED ? "high" : "low");
			probe_all();
			if (fds[i] < 0 || write(fds[i], line, (size_t)len) != len)
				bad++;
		}
		for (int i = 0; i < FILES; i++)
			if (fds[i] >= 0)
				close(fds[i]);
	}
	printf("failures %d\n", bad);
	for (int i = 0; i < FILES; i++) {
		char p[4096];
		long size;
		snprintf(p, sizeof p, "%s/f%d", out, i);
		uint64_t h = fnv_file(p, &size);
		printf("f%d %ld %016" PRIx64 "\n", i, size, h);
	}
	for (int i = 0; i < npaths; i++) {
		long size;
		fnv_file(paths[i], &size);
		printf("%s %ld\n", paths[i], size);
	}
	return 0;
}
