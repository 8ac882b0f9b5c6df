/*
 * threads.c - concurrency check for the fmcache preload library.
 *
 *   threads [-p] N SECONDS LISTFILE [PASSES]
 *
 * With -p the main thread's answers are printed first, one line per path
 * ("PATH: ANSWER"), so that a run can be compared with a native one; N may
 * then be 0 (answers only).
 *
 * LISTFILE holds one path per line (the whole line is the path; blank lines
 * and lines starting with '#' are ignored).  For every path the main thread
 * first computes an "answer" before any thread starts:
 *
 *   stat64(path)                 all fields except st_atim (reading the
 *                                files may legitimately move atime natively)
 *   open(O_RDONLY|O_CLOEXEC)     + read() to EOF: size and FNV-1a hash
 *                                (or the errno name, e.g. EISDIR), close
 *   opendir + readdir64 loop     every "name:d_type:d_ino", closedir
 *
 * Then N threads loop over the list (each starting at a different offset)
 * recomputing the answer and comparing it with the main thread's.  Without
 * PASSES every thread runs for SECONDS seconds; with PASSES > 0 each thread
 * does exactly PASSES passes over the list (SECONDS is then ignored and the
 * output is deterministic: ok N*PASSES*len).
 *
 * Output: "ok <total probes>" and exit 0, or the first mismatch
 *   MISMATCH thread=T path=P
 *   expected: ...
 *   got: ...
 * and exit 1.
 *
 * Build: gcc -O1 -Wall -Wextra -Werror -o threads threads.c   (no -pthread
 * needed with glibc >= 2.34)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "errname.h"

/* ---- growable string ---- */
struct sb {
	char *p;
	size_t len, cap;
};

static void sb_printf(struct sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sb *b, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		size_t room = b->cap - b->len;
		int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0)
			abort();
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		size_t ncap = b->cap ? b->cap * 2 : 256;
		while (ncap < b->len + (size_t)n + 1)
			ncap *= 2;
		char *np = realloc(b->p, ncap);
		if (np == NULL)
			abort();
		b->p = np;
		b->cap = ncap;
	}
}

static void sb_esc(struct sb *b, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c > 0x20 && c < 0x7f && c != '\\')
			sb_printf(b, "%c", c);
		else
			sb_printf(b, "\\x%02x", c);
	}
}

static void sb_err(struct sb *b, int e)
{
	const char *name = errname(e);
	if (name)
		sb_printf(b, "ERR %s", name);
	else
		sb_printf(b, "ERR %d", e);
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	const unsigned char *c = p;
	for (size_t i = 0; i < n; i++) {
		h ^= c[i];
		h *= UINT64_C(0x100000001b3);
	}
	return h;
}

/* The answer for one path, appended to b (b->len reset first). */
static void answer(struct sb *b, const char *path, char *buf, size_t bufsz)
{
	b->len = 0;
	if (b->p)
		b->p[0] = '\0';

	struct stat64 st;
	errno = 0;
	if (stat64(path, &st) != 0) {
		sb_printf(b, "stat64=");
		sb_err(b, errno);
	} else {
		sb_printf(b, "stat64=dev=%ju ino=%ju mode=%o nlink=%ju uid=%ju gid=%ju rdev=%ju size=%jd blksize=%jd blocks=%jd mtime=%jd.%09ld ctime=%jd.%09ld",
			  (uintmax_t)st.st_dev, (uintmax_t)st.st_ino, (unsigned)st.st_mode,
			  (uintmax_t)st.st_nlink, (uintmax_t)st.st_uid, (uintmax_t)st.st_gid,
			  (uintmax_t)st.st_rdev, (intmax_t)st.st_size, (intmax_t)st.st_blksize,
			  (intmax_t)st.st_blocks, (intmax_t)st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
			  (intmax_t)st.st_ctim.tv_sec, st.st_ctim.tv_nsec);
	}

	errno = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		sb_printf(b, " | open=");
		sb_err(b, errno);
	} else {
		uint64_t h = UINT64_C(0xcbf29ce484222325);
		long long total = 0;
		ssize_t n;
		errno = 0;
		while ((n = read(fd, buf, bufsz)) > 0) {
			h = fnv1a(h, buf, (size_t)n);
			total += n;
		}
		if (n < 0) {
			sb_printf(b, " | read=");
			sb_err(b, errno);
		} else {
			sb_printf(b, " | read=%lld:%016" PRIx64, total, h);
		}
		close(fd);
	}

	errno = 0;
	DIR *d = opendir(path);
	if (d == NULL) {
		sb_printf(b, " | opendir=");
		sb_err(b, errno);
	} else {
		sb_printf(b, " | dir=");
		struct dirent64 *e;
		errno = 0;
		while ((e = readdir64(d)) != NULL) {
			sb_printf(b, " ");
			sb_esc(b, e->d_name);
			sb_printf(b, ":%u:%ju", (unsigned)e->d_type, (uintmax_t)e->d_ino);
			errno = 0;
		}
		if (errno != 0) {
			sb_printf(b, " end=");
			sb_err(b, errno);
		}
		closedir(d);
	}
	if (b->p == NULL)
		sb_printf(b, "%s", "");
}

/* ---- shared state ---- */
static char **paths;
static char **expected;
static size_t npaths;
static int nthreads;
static double seconds;
static long passes;

static volatile int stop_flag; /* accessed with __atomic builtins */
static pthread_mutex_t mis_lock = PTHREAD_MUTEX_INITIALIZER;
static int mismatch;
static int mis_thread;
static char *mis_path, *mis_expected, *mis_got;

struct targ {
	int id;
	unsigned long long count;
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *worker(void *arg)
{
	struct targ *t = arg;
	struct sb b = {NULL, 0, 0};
	size_t bufsz = 65536;
	char *buf = malloc(bufsz);
	size_t start = npaths ? ((size_t)t->id * (npaths / (size_t)nthreads + 1)) % npaths : 0;
	double deadline = now() + seconds;
	if (buf == NULL)
		abort();
	for (long pass = 0;; pass++) {
		if (passes > 0 ? pass >= passes : now() >= deadline)
			break;
		for (size_t k = 0; k < npaths; k++) {
			if (__atomic_load_n(&stop_flag, __ATOMIC_RELAXED))
				goto done;
			size_t i = (start + k) % npaths;
			answer(&b, paths[i], buf, bufsz);
			t->count++;
			if (strcmp(b.p, expected[i]) != 0) {
				pthread_mutex_lock(&mis_lock);
				if (!mismatch) {
					mismatch = 1;
					mis_thread = t->id;
					mis_path = paths[i];
					mis_expected = expected[i];
					mis_got = strdup(b.p);
				}
				pthread_mutex_unlock(&mis_lock);
				__atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
				goto done;
			}
			if (passes <= 0 && (k & 15) == 15 && now() >= deadline)
				goto done;
		}
	}
done:
	free(buf);
	free(b.p);
	return NULL;
}

int main(int argc, char **argv)
{
	int print = argc > 1 && strcmp(argv[1], "-p") == 0;
	if (print) {
		argv++;
		argc--;
	}
	if (argc < 4 || argc > 5) {
		fprintf(stderr, "usage: threads [-p] N SECONDS LISTFILE [PASSES]\n");
		return 2;
	}
	nthreads = atoi(argv[1]);
	seconds = strtod(argv[2], NULL);
	passes = argc == 5 ? atol(argv[4]) : 0;
	if (nthreads < 0 || (nthreads == 0 && !print)) {
		fprintf(stderr, "threads: N must be > 0 (or 0 with -p)\n");
		return 2;
	}

	FILE *f = fopen(argv[3], "re");
	if (f == NULL) {
		fprintf(stderr, "threads: cannot open %s: %s\n", argv[3], strerror(errno));
		return 2;
	}
	size_t cap = 0;
	char *line = NULL;
	size_t lcap = 0;
	ssize_t len;
	while ((len = getline(&line, &lcap, f)) >= 0) {
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
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

	expected = calloc(npaths ? npaths : 1, sizeof *expected);
	char *buf = malloc(65536);
	if (expected == NULL || buf == NULL)
		abort();
	for (size_t i = 0; i < npaths; i++) {
		struct sb b = {NULL, 0, 0};
		answer(&b, paths[i], buf, 65536);
		expected[i] = b.p;
	}
	free(buf);
	if (print) {
		for (size_t i = 0; i < npaths; i++)
			printf("%s: %s\n", paths[i], expected[i]);
		fflush(stdout);
	}

	pthread_t *tids = calloc((size_t)nthreads + 1, sizeof *tids);
	struct targ *args = calloc((size_t)nthreads + 1, sizeof *args);
	if (tids == NULL || args == NULL)
		abort();
	for (int i = 0; i < nthreads; i++) {
		args[i].id = i;
		int e = pthread_create(&tids[i], NULL, worker, &args[i]);
		if (e != 0) {
			fprintf(stderr, "threads: pthread_create: %s\n", strerror(e));
			return 2;
		}
	}
	unsigned long long total = 0;
	for (int i = 0; i < nthreads; i++) {
		pthread_join(tids[i], NULL);
		total += args[i].count;
	}

	if (mismatch) {
		printf("MISMATCH thread=%d path=%s\nexpected: %s\ngot: %s\n", mis_thread, mis_path,
		       mis_expected, mis_got);
		fflush(stdout);
		return 1;
	}
	printf("ok %llu\n", total);
	fflush(stdout);
	return 0;
}
