/*
 * probe.c - file-system probe driver for the fmcache integration tests.
 *
 *   probe OP [PATH [ARG]]        run one probe
 *   probe -f LISTFILE            run one probe per line ("OP PATH [ARG]")
 *
 * Every probe prints exactly one line:
 *
 *   OP PATH [ARG] -> RESULT
 *
 * RESULT is either "ERR <errno-name>" or the observable result of the call.
 * The output must be byte-for-byte identical between a native run and a run
 * under the preload library, so nothing nondeterministic (pointers, pids,
 * fd numbers unless explicitly asked for with the `fdnum` op) is printed.
 * See README.md for the list of ops.
 *
 * Batch-file syntax: blank lines and lines starting with '#' are ignored.
 * Tokens are separated by blanks.  In a token, `""` alone means the empty
 * string, `\xHH` is the byte 0xHH and `\\` is a backslash (so paths with
 * blanks or odd bytes can be written).  The prefix of the output line echoes
 * the tokens as written.  In argv mode no decoding is done.
 *
 * Build: gcc -O1 -Wall -Wextra -Werror -o probe probe.c
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "errname.h"

/* Old glibc stat entry points.  On glibc 2.36 / x86-64 these are still
 * exported with version GLIBC_2.2.5 (GLIBC_2.4 for __fxstatat*) as normal
 * (non-hidden) symbols, so plain extern declarations link fine. */
extern int __xstat(int ver, const char *path, struct stat *buf);
extern int __lxstat(int ver, const char *path, struct stat *buf);
extern int __xstat64(int ver, const char *path, struct stat64 *buf);
extern int __lxstat64(int ver, const char *path, struct stat64 *buf);
extern int __fxstatat(int ver, int dirfd, const char *path, struct stat *buf, int flags);
extern int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *buf, int flags);
/* Fortify entry points (normally only declared with _FORTIFY_SOURCE). */
extern int __open_2(const char *path, int flags);
extern int __open64_2(const char *path, int flags);
extern int __openat_2(int dirfd, const char *path, int flags);
extern int __openat64_2(int dirfd, const char *path, int flags);

#define STAT_VER 1 /* _STAT_VER_LINUX on x86-64 */

_Static_assert(sizeof(struct stat) == sizeof(struct stat64), "stat/stat64 layout");
_Static_assert(sizeof(struct statx) == 0x100, "statx layout");

/* A NULL path the compiler cannot see through (avoids -Wnonnull). */
static const char *volatile null_path = NULL;
/* The batch token that passes a NULL path to any op. */
#define NULL_TOKEN "\\NULL"

/* ------------------------------------------------------------------ */
/* helpers                                                              */

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
}

/* Print bytes, escaping anything that is not a printable non-blank ASCII
 * character (and the backslash) as \xHH. */
static void put_esc_n(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c > 0x20 && c < 0x7f && c != '\\')
			putchar(c);
		else
			printf("\\x%02x", c);
	}
}

static void put_esc(const char *s)
{
	put_esc_n(s, strlen(s));
}

/* For echoing the probe's tokens: like put_esc but a backslash is printed
 * as is, so batch tokens such as a\x20b are echoed exactly as written. */
static void put_echo(const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c > 0x20 && c < 0x7f)
			putchar(c);
		else
			printf("\\x%02x", c);
	}
}

#define FNV_INIT UINT64_C(0xcbf29ce484222325)
static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= UINT64_C(0x100000001b3);
	}
	return h;
}

static void put_err(int e)
{
	const char *name = errname(e);
	if (name)
		out("ERR %s", name);
	else
		out("ERR %d", e);
}

static void put_ts(const char *name, struct timespec ts)
{
	out(" %s=%jd.%09ld", name, (intmax_t)ts.tv_sec, (long)ts.tv_nsec);
}

static void put_stat(const struct stat *st)
{
	out("dev=%ju ino=%ju mode=%o nlink=%ju uid=%ju gid=%ju rdev=%ju size=%jd blksize=%jd blocks=%jd",
	    (uintmax_t)st->st_dev, (uintmax_t)st->st_ino, (unsigned)st->st_mode,
	    (uintmax_t)st->st_nlink, (uintmax_t)st->st_uid, (uintmax_t)st->st_gid,
	    (uintmax_t)st->st_rdev, (intmax_t)st->st_size, (intmax_t)st->st_blksize,
	    (intmax_t)st->st_blocks);
	put_ts("atime", st->st_atim);
	put_ts("mtime", st->st_mtim);
	put_ts("ctime", st->st_ctim);
	/* hash over the whole struct (buffer pre-filled with 0xa5), so that
	 * padding / reserved words are compared too */
	out(" raw=%016" PRIx64, fnv1a(FNV_INIT, st, sizeof *st));
}

static void put_stx_ts(const char *name, struct statx_timestamp ts)
{
	out(" %s=%lld.%09u", name, (long long)ts.tv_sec, (unsigned)ts.tv_nsec);
}

static void put_statx(const struct statx *sx)
{
	out("mask=%#x blksize=%u attributes=%#llx nlink=%u uid=%u gid=%u mode=%o ino=%llu size=%llu blocks=%llu attributes_mask=%#llx",
	    (unsigned)sx->stx_mask, (unsigned)sx->stx_blksize,
	    (unsigned long long)sx->stx_attributes, (unsigned)sx->stx_nlink,
	    (unsigned)sx->stx_uid, (unsigned)sx->stx_gid, (unsigned)sx->stx_mode,
	    (unsigned long long)sx->stx_ino, (unsigned long long)sx->stx_size,
	    (unsigned long long)sx->stx_blocks,
	    (unsigned long long)sx->stx_attributes_mask);
	put_stx_ts("atime", sx->stx_atime);
	put_stx_ts("btime", sx->stx_btime);
	put_stx_ts("ctime", sx->stx_ctime);
	put_stx_ts("mtime", sx->stx_mtime);
	/* stx_mnt_id and later fields: depending on which header defines
	 * struct statx (glibc's generic one or linux/stat.h) they are named
	 * differently, so read the 14 words at offset 0x90 of the kernel layout:
	 * word 0 = stx_mnt_id, the rest printed only when nonzero. */
	uint64_t tail[14];
	memcpy(tail, (const char *)sx + 0x90, sizeof tail);
	out(" rdev=%u:%u dev=%u:%u mnt_id=%llu",
	    (unsigned)sx->stx_rdev_major, (unsigned)sx->stx_rdev_minor,
	    (unsigned)sx->stx_dev_major, (unsigned)sx->stx_dev_minor,
	    (unsigned long long)tail[0]);
	int any = 0;
	for (int i = 1; i < 14; i++) {
		if (tail[i] != 0) {
			out("%s%d:%#llx", any ? "," : " spare=", i, (unsigned long long)tail[i]);
			any = 1;
		}
	}
	out(" raw=%016" PRIx64, fnv1a(FNV_INIT, sx, sizeof *sx));
}

static int parse_access_mode(const char *s, int *mode)
{
	if (s == NULL)
		return -1;
	if (strcmp(s, "F") == 0) {
		*mode = F_OK;
		return 0;
	}
	int m = 0;
	if (*s == '\0')
		return -1;
	for (; *s; s++) {
		switch (*s) {
		case 'R': m |= R_OK; break;
		case 'W': m |= W_OK; break;
		case 'X': m |= X_OK; break;
		default: return -1;
		}
	}
	*mode = m;
	return 0;
}

static const struct {
	const char *name;
	int flag;
} oflags[] = {
	{"RDONLY", O_RDONLY}, {"WRONLY", O_WRONLY}, {"RDWR", O_RDWR},
	{"CLOEXEC", O_CLOEXEC}, {"DIRECTORY", O_DIRECTORY}, {"NOFOLLOW", O_NOFOLLOW},
	{"CREAT", O_CREAT}, {"EXCL", O_EXCL}, {"TRUNC", O_TRUNC},
	{"APPEND", O_APPEND}, {"NONBLOCK", O_NONBLOCK}, {"PATH", O_PATH},
	{"NOCTTY", O_NOCTTY}, {"NOATIME", O_NOATIME}, {"LARGEFILE", O_LARGEFILE},
	{"SYNC", O_SYNC}, {"DSYNC", O_DSYNC}, {"TMPFILE", O_TMPFILE},
};

/* Parse "RDONLY|CLOEXEC|..."; missing -> O_RDONLY. */
static int parse_oflags(const char *s, int *flags)
{
	int f = 0;
	if (s == NULL || *s == '\0') {
		*flags = O_RDONLY;
		return 0;
	}
	char *copy = strdup(s), *save = NULL;
	for (char *tok = strtok_r(copy, "|", &save); tok; tok = strtok_r(NULL, "|", &save)) {
		if (strncmp(tok, "O_", 2) == 0)
			tok += 2;
		size_t i;
		for (i = 0; i < sizeof oflags / sizeof oflags[0]; i++)
			if (strcmp(tok, oflags[i].name) == 0)
				break;
		if (i == sizeof oflags / sizeof oflags[0]) {
			free(copy);
			return -1;
		}
		f |= oflags[i].flag;
	}
	free(copy);
	*flags = f;
	return 0;
}

#define CREATE_MODE 0644

/* ------------------------------------------------------------------ */
/* op handlers                                                          */

struct op;
typedef void (*op_fn)(const struct op *, const char *path, const char *arg);
struct op {
	const char *name;
	op_fn fn;
	int kind;
	int need_arg; /* 1: ARG is required */
};

enum {
	K_STAT, K_LSTAT, K_STAT64, K_LSTAT64, K_FSTATAT, K_FSTATAT_NOFOLLOW,
	K_FSTATAT64, K_FSTATAT64_NOFOLLOW, K_FSTATAT_EMPTY,
	K_XSTAT, K_LXSTAT, K_XSTAT64, K_LXSTAT64, K_FXSTATAT, K_FXSTATAT64,
	K_FXSTATAT64_NOFOLLOW,
};

static void op_stat(const struct op *op, const char *path, const char *arg)
{
	(void)arg;
	struct stat st;
	struct stat64 st64;
	int r = -1, is64 = 0;
	memset(&st, 0xa5, sizeof st);
	memset(&st64, 0xa5, sizeof st64);
	errno = 0;
	switch (op->kind) {
	case K_STAT: r = stat(path, &st); break;
	case K_LSTAT: r = lstat(path, &st); break;
	case K_STAT64: r = stat64(path, &st64); is64 = 1; break;
	case K_LSTAT64: r = lstat64(path, &st64); is64 = 1; break;
	case K_FSTATAT: r = fstatat(AT_FDCWD, path, &st, 0); break;
	case K_FSTATAT_NOFOLLOW: r = fstatat(AT_FDCWD, path, &st, AT_SYMLINK_NOFOLLOW); break;
	case K_FSTATAT64: r = fstatat64(AT_FDCWD, path, &st64, 0); is64 = 1; break;
	case K_FSTATAT64_NOFOLLOW:
		r = fstatat64(AT_FDCWD, path, &st64, AT_SYMLINK_NOFOLLOW); is64 = 1; break;
	case K_FSTATAT_EMPTY: r = fstatat(AT_FDCWD, path, &st, AT_EMPTY_PATH); break;
	case K_XSTAT: r = __xstat(STAT_VER, path, &st); break;
	case K_LXSTAT: r = __lxstat(STAT_VER, path, &st); break;
	case K_XSTAT64: r = __xstat64(STAT_VER, path, &st64); is64 = 1; break;
	case K_LXSTAT64: r = __lxstat64(STAT_VER, path, &st64); is64 = 1; break;
	case K_FXSTATAT: r = __fxstatat(STAT_VER, AT_FDCWD, path, &st, 0); break;
	case K_FXSTATAT64: r = __fxstatat64(STAT_VER, AT_FDCWD, path, &st64, 0); is64 = 1; break;
	case K_FXSTATAT64_NOFOLLOW:
		r = __fxstatat64(STAT_VER, AT_FDCWD, path, &st64, AT_SYMLINK_NOFOLLOW); is64 = 1; break;
	}
	if (r != 0) {
		int e = errno;
		if (r != -1)
			out("ret=%d ", r);
		put_err(e);
		return;
	}
	if (is64)
		memcpy(&st, &st64, sizeof st);
	put_stat(&st);
}

static void op_statx(const struct op *op, const char *path, const char *arg)
{
	(void)arg;
	struct statx sx;
	memset(&sx, 0xa5, sizeof sx);
	errno = 0;
	int r = statx(AT_FDCWD, path, op->kind, STATX_BASIC_STATS | STATX_BTIME, &sx);
	if (r != 0) {
		put_err(errno);
		return;
	}
	put_statx(&sx);
}

enum { A_ACCESS, A_FACCESSAT, A_FACCESSAT_EACCESS, A_FACCESSAT_NOFOLLOW, A_EUIDACCESS, A_EACCESS };

static void op_access(const struct op *op, const char *path, const char *arg)
{
	int mode;
	if (parse_access_mode(arg, &mode) != 0) {
		out("BAD-MODE");
		return;
	}
	errno = 0;
	int r = -1;
	switch (op->kind) {
	case A_ACCESS: r = access(path, mode); break;
	case A_FACCESSAT: r = faccessat(AT_FDCWD, path, mode, 0); break;
	case A_FACCESSAT_EACCESS: r = faccessat(AT_FDCWD, path, mode, AT_EACCESS); break;
	case A_FACCESSAT_NOFOLLOW: r = faccessat(AT_FDCWD, path, mode, AT_SYMLINK_NOFOLLOW); break;
	case A_EUIDACCESS: r = euidaccess(path, mode); break;
	case A_EACCESS: r = eaccess(path, mode); break;
	}
	if (r != 0) {
		int e = errno;
		if (r != -1)
			out("ret=%d ", r);
		put_err(e);
		return;
	}
	out("0");
}

/* Everything observable about an open fd; closes fd. */
static void report_fd(int fd)
{
	struct stat st, st2;
	memset(&st, 0xa5, sizeof st);
	errno = 0;
	if (fstat(fd, &st) != 0) {
		out("fstat=");
		put_err(errno);
		close(fd);
		return;
	}
	put_stat(&st);

	static char buf[65536];
	uint64_t h = FNV_INIT;
	long long total = 0;
	int rerr = 0;
	for (;;) {
		errno = 0;
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0) {
			rerr = errno;
			break;
		}
		if (n == 0)
			break;
		h = fnv1a(h, buf, (size_t)n);
		total += n;
	}
	if (rerr != 0) {
		out(" | read=");
		if (total > 0)
			out("%lld:%016" PRIx64 " then ", total, h);
		put_err(rerr);
	} else {
		out(" | read=%lld:%016" PRIx64, total, h);

		size_t want = total < 4096 ? (size_t)total : 4096;
		errno = 0;
		ssize_t pn = pread(fd, buf, want, 0);
		if (pn < 0) {
			out(" | pread=");
			put_err(errno);
		} else {
			out(" | pread=%zd:%016" PRIx64, pn, fnv1a(FNV_INIT, buf, (size_t)pn));
		}

		errno = 0;
		off_t end = lseek(fd, 0, SEEK_END);
		if (end == (off_t)-1) {
			out(" | lseek=");
			put_err(errno);
		} else {
			out(" | lseek=%jd", (intmax_t)end);
		}

		long long mlen = total;
		if (S_ISREG(st.st_mode) && st.st_size < mlen)
			mlen = st.st_size; /* never map beyond EOF (SIGBUS) */
		if (!S_ISREG(st.st_mode) || mlen <= 0) {
			out(" | mmap=-");
		} else {
			errno = 0;
			void *m = mmap(NULL, (size_t)mlen, PROT_READ, MAP_PRIVATE, fd, 0);
			if (m == MAP_FAILED) {
				out(" | mmap=");
				put_err(errno);
			} else {
				out(" | mmap=%lld:%016" PRIx64, mlen, fnv1a(FNV_INIT, m, (size_t)mlen));
				munmap(m, (size_t)mlen);
			}
		}
	}

	errno = 0;
	int d = dup(fd);
	if (d < 0) {
		out(" | dup=");
		put_err(errno);
	} else {
		memset(&st2, 0xa5, sizeof st2);
		errno = 0;
		if (fstat(d, &st2) != 0) {
			out(" | dupfstat=");
			put_err(errno);
		} else if (st2.st_ino == st.st_ino && st2.st_dev == st.st_dev &&
			   st2.st_size == st.st_size &&
			   st2.st_mtim.tv_sec == st.st_mtim.tv_sec &&
			   st2.st_mtim.tv_nsec == st.st_mtim.tv_nsec) {
			out(" | dupok");
		} else {
			out(" | DUP-DIFFERS orig: ");
			put_stat(&st);
			out(" dup: ");
			put_stat(&st2);
		}
		close(d);
	}
	close(fd);
}

enum { O_K_OPEN, O_K_OPEN64, O_K_OPENAT, O_K_OPENAT64, O_K_OPEN_2, O_K_OPEN64_2,
       O_K_OPENAT_2, O_K_OPENAT64_2 };

static void op_open(const struct op *op, const char *path, const char *arg)
{
	int flags;
	if (parse_oflags(arg, &flags) != 0) {
		out("BAD-FLAGS");
		return;
	}
	int fortify = op->kind >= O_K_OPEN_2;
	if (fortify && ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE)) {
		/* glibc aborts the process for these (mode is required) */
		out("SKIP needs-mode");
		return;
	}
	errno = 0;
	int fd = -1;
	switch (op->kind) {
	case O_K_OPEN: fd = open(path, flags, CREATE_MODE); break;
	case O_K_OPEN64: fd = open64(path, flags, CREATE_MODE); break;
	case O_K_OPENAT: fd = openat(AT_FDCWD, path, flags, CREATE_MODE); break;
	case O_K_OPENAT64: fd = openat64(AT_FDCWD, path, flags, CREATE_MODE); break;
	case O_K_OPEN_2: fd = __open_2(path, flags); break;
	case O_K_OPEN64_2: fd = __open64_2(path, flags); break;
	case O_K_OPENAT_2: fd = __openat_2(AT_FDCWD, path, flags); break;
	case O_K_OPENAT64_2: fd = __openat64_2(AT_FDCWD, path, flags); break;
	}
	if (fd < 0) {
		put_err(errno);
		return;
	}
	report_fd(fd);
}

/* fdnum PATH [FLAGS]: the fd number open() returns and the one dup()
 * returns.  Deterministic natively; shows fds held by the preload. */
static void op_fdnum(const struct op *op, const char *path, const char *arg)
{
	(void)op;
	int flags;
	if (parse_oflags(arg, &flags) != 0) {
		out("BAD-FLAGS");
		return;
	}
	errno = 0;
	int fd = open(path, flags, CREATE_MODE);
	if (fd < 0) {
		put_err(errno);
		return;
	}
	int d = dup(fd);
	out("fd=%d dup=%d", fd, d);
	if (d >= 0)
		close(d);
	close(fd);
}

enum { F_FOPEN, F_FOPEN64, F_FREOPEN };

static void op_fopen(const struct op *op, const char *path, const char *arg)
{
	const char *mode = arg ? arg : "r";
	FILE *f = NULL;
	errno = 0;
	switch (op->kind) {
	case F_FOPEN: f = fopen(path, mode); break;
	case F_FOPEN64: f = fopen64(path, mode); break;
	case F_FREOPEN: {
		FILE *f0 = fopen("/dev/null", "r");
		if (f0 == NULL) {
			out("devnull=");
			put_err(errno);
			return;
		}
		errno = 0;
		f = freopen(path, mode, f0);
		break;
	}
	}
	if (f == NULL) {
		put_err(errno);
		return;
	}
	static char buf[65536];
	uint64_t h = FNV_INIT;
	long long total = 0;
	size_t n;
	errno = 0;
	while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
		h = fnv1a(h, buf, n);
		total += (long long)n;
	}
	int e = errno;
	out("fread=%lld:%016" PRIx64, total, h);
	if (ferror(f)) {
		out(" ferror=");
		put_err(e);
	}
	struct stat st;
	memset(&st, 0xa5, sizeof st);
	errno = 0;
	if (fstat(fileno(f), &st) != 0) {
		out(" | fstat=");
		put_err(errno);
	} else {
		out(" | ");
		put_stat(&st);
	}
	fclose(f);
}

/* ---- directories ---- */

static void put_dirent(const struct dirent64 *d, int full)
{
	out(" ");
	put_esc(d->d_name);
	out(":%u:%ju", (unsigned)d->d_type, (uintmax_t)d->d_ino);
	if (full)
		out(":%jd:%u", (intmax_t)d->d_off, (unsigned)d->d_reclen);
}

/* reads the whole stream with readdir64 (or readdir); prints n=K + list */
static void list_dir(DIR *dir, int use32, int full)
{
	/* collect into a temporary buffer to print the count first */
	char *mem = NULL;
	size_t memlen = 0;
	FILE *saved = stdout;
	FILE *ms = open_memstream(&mem, &memlen);
	if (ms == NULL) {
		out("open_memstream failed");
		return;
	}
	stdout = ms;
	int n = 0, e;
	for (;;) {
		errno = 0;
		if (use32) {
			struct dirent *d = readdir(dir);
			if (d == NULL)
				break;
			put_dirent((const struct dirent64 *)(const void *)d, full);
		} else {
			struct dirent64 *d = readdir64(dir);
			if (d == NULL)
				break;
			put_dirent(d, full);
		}
		n++;
	}
	e = errno;
	stdout = saved;
	fclose(ms);
	out("n=%d%s", n, mem);
	free(mem);
	if (e != 0) {
		out(" end=");
		put_err(e);
	}
}

_Static_assert(sizeof(struct dirent) == sizeof(struct dirent64), "dirent layout");

enum { D_READDIR, D_READDIR32, D_READDIR_FULL };

static void op_readdir(const struct op *op, const char *path, const char *arg)
{
	(void)arg;
	errno = 0;
	DIR *dir = opendir(path);
	if (dir == NULL) {
		put_err(errno);
		return;
	}
	list_dir(dir, op->kind == D_READDIR32, op->kind == D_READDIR_FULL);
	errno = 0;
	if (closedir(dir) != 0) {
		out(" closedir=");
		put_err(errno);
	}
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static void op_readdir_r(const struct op *op, const char *path, const char *arg)
{
	(void)arg;
	errno = 0;
	DIR *dir = opendir(path);
	if (dir == NULL) {
		put_err(errno);
		return;
	}
	int n = 0, r;
	char *mem = NULL;
	size_t memlen = 0;
	FILE *saved = stdout;
	FILE *ms = open_memstream(&mem, &memlen);
	if (ms == NULL) {
		closedir(dir);
		out("open_memstream failed");
		return;
	}
	stdout = ms;
	for (;;) {
		if (op->kind == 64) {
			struct dirent64 ent, *res = NULL;
			r = readdir64_r(dir, &ent, &res);
			if (r != 0 || res == NULL)
				break;
			put_dirent(res, 0);
		} else {
			struct dirent ent, *res = NULL;
			r = readdir_r(dir, &ent, &res);
			if (r != 0 || res == NULL)
				break;
			put_dirent((const struct dirent64 *)(const void *)res, 0);
		}
		n++;
	}
	stdout = saved;
	fclose(ms);
	out("n=%d%s", n, mem);
	free(mem);
	if (r != 0) {
		out(" end=");
		put_err(r);
	}
	closedir(dir);
}
#pragma GCC diagnostic pop

static void op_scandir(const struct op *op, const char *path, const char *arg)
{
	(void)arg;
	errno = 0;
	int n;
	if (op->kind == 64) {
		struct dirent64 **list = NULL;
		n = scandir64(path, &list, NULL, alphasort64);
		if (n < 0) {
			put_err(errno);
			return;
		}
		out("n=%d", n);
		for (int i = 0; i < n; i++) {
			out(" ");
			put_esc(list[i]->d_name);
			out(":%u", (unsigned)list[i]->d_type);
			free(list[i]);
		}
		free(list);
	} else {
		struct dirent **list = NULL;
		n = scandir(path, &list, NULL, alphasort);
		if (n < 0) {
			put_err(errno);
			return;
		}
		out("n=%d", n);
		for (int i = 0; i < n; i++) {
			out(" ");
			put_esc(list[i]->d_name);
			out(":%u", (unsigned)list[i]->d_type);
			free(list[i]);
		}
		free(list);
	}
}

static void op_fdopendir(const struct op *op, const char *path, const char *arg)
{
	(void)op;
	(void)arg;
	errno = 0;
	int fd = open(path, O_RDONLY | O_DIRECTORY);
	if (fd < 0) {
		put_err(errno);
		return;
	}
	errno = 0;
	DIR *dir = fdopendir(fd);
	if (dir == NULL) {
		out("fdopendir=");
		put_err(errno);
		close(fd);
		return;
	}
	list_dir(dir, 0, 0);
	errno = 0;
	if (closedir(dir) != 0) {
		out(" closedir=");
		put_err(errno);
	}
}

static void op_dirfd(const struct op *op, const char *path, const char *arg)
{
	(void)op;
	(void)arg;
	errno = 0;
	DIR *dir = opendir(path);
	if (dir == NULL) {
		put_err(errno);
		return;
	}
	errno = 0;
	int fd = dirfd(dir);
	struct stat st;
	memset(&st, 0xa5, sizeof st);
	if (fd < 0) {
		out("dirfd=");
		put_err(errno);
	} else if (fstat(fd, &st) != 0) {
		out("fstat=");
		put_err(errno);
	} else {
		put_stat(&st);
	}
	closedir(dir);
}

static void put_name_or_end(const struct dirent64 *d)
{
	if (d == NULL) {
		out("<end>");
	} else {
		put_esc(d->d_name);
	}
}

/* telldir / telldir_full (also prints the telldir cookie) */
static void op_telldir(const struct op *op, const char *path, const char *arg)
{
	(void)arg;
	errno = 0;
	DIR *dir = opendir(path);
	if (dir == NULL) {
		put_err(errno);
		return;
	}
	struct dirent64 *d;
	int got = 0;
	for (int i = 0; i < 2; i++) {
		d = readdir64(dir);
		if (d != NULL)
			got++;
	}
	errno = 0;
	long pos = telldir(dir);
	if (pos == -1) {
		out("telldir=");
		put_err(errno);
		closedir(dir);
		return;
	}
	d = readdir64(dir);
	char *x = d ? strdup(d->d_name) : NULL;
	seekdir(dir, pos);
	d = readdir64(dir);
	int same = (x == NULL && d == NULL) || (x != NULL && d != NULL && strcmp(x, d->d_name) == 0);
	out("first=%d", got);
	if (op->kind)
		out(" pos=%ld", pos);
	out(" next=");
	if (x)
		put_esc(x);
	else
		out("<end>");
	out(" again=");
	put_name_or_end(d);
	out(" %s", same ? "same" : "DIFFERENT");
	free(x);
	closedir(dir);
}

/* rewinddir: read all, rewind, read all again, compare */
static void op_rewinddir(const struct op *op, const char *path, const char *arg)
{
	(void)op;
	(void)arg;
	errno = 0;
	DIR *dir = opendir(path);
	if (dir == NULL) {
		put_err(errno);
		return;
	}
	uint64_t h[2];
	int n[2];
	for (int pass = 0; pass < 2; pass++) {
		h[pass] = FNV_INIT;
		n[pass] = 0;
		struct dirent64 *d;
		while ((d = readdir64(dir)) != NULL) {
			h[pass] = fnv1a(h[pass], d->d_name, strlen(d->d_name) + 1);
			h[pass] = fnv1a(h[pass], &d->d_ino, sizeof d->d_ino);
			h[pass] = fnv1a(h[pass], &d->d_type, sizeof d->d_type);
			n[pass]++;
		}
		rewinddir(dir);
	}
	out("n=%d:%016" PRIx64 " again=%d:%016" PRIx64 " %s", n[0], h[0], n[1], h[1],
	    (n[0] == n[1] && h[0] == h[1]) ? "same" : "DIFFERENT");
	closedir(dir);
}

/* ---- readlink ---- */

enum { L_READLINK, L_READLINKAT, L_SMALL };

static void op_readlink(const struct op *op, const char *path, const char *arg)
{
	(void)arg;
	char buf[PATH_MAX + 1];
	size_t sz = op->kind == L_SMALL ? 4 : PATH_MAX;
	memset(buf, 0xa5, sizeof buf);
	errno = 0;
	ssize_t n;
	if (op->kind == L_READLINKAT)
		n = readlinkat(AT_FDCWD, path, buf, sz);
	else
		n = readlink(path, buf, sz);
	if (n < 0) {
		put_err(errno);
		return;
	}
	out("len=%zd target=", n);
	put_esc_n(buf, (size_t)n);
	/* bytes the caller can see beyond the returned length (must be
	 * untouched: readlink does not NUL-terminate) */
	if (op->kind == L_SMALL) {
		out(" buf=");
		put_esc_n(buf, sz);
	}
	out(" after=%02x", (unsigned char)buf[n]);
}

/* ---- realpath / cwd ---- */

static void op_realpath(const struct op *op, const char *path, const char *arg)
{
	(void)op;
	(void)arg;
	errno = 0;
	char *r = realpath(path, NULL);
	out("alloc=");
	if (r == NULL) {
		put_err(errno);
	} else {
		put_esc(r);
		free(r);
	}
	static char buf[PATH_MAX + 1];
	memset(buf, 0, sizeof buf);
	errno = 0;
	r = realpath(path, buf);
	out(" | buf=");
	if (r == NULL) {
		put_err(errno);
		/* glibc leaves the failing prefix in the caller's buffer */
		out(" partial=\"");
		put_esc_n(buf, strnlen(buf, PATH_MAX));
		out("\"");
	} else {
		if (r != buf)
			out("NOT-CALLER-BUFFER ");
		put_esc(r);
	}
}

static void op_canon(const struct op *op, const char *path, const char *arg)
{
	(void)op;
	(void)arg;
	errno = 0;
	char *r = canonicalize_file_name(path);
	if (r == NULL) {
		put_err(errno);
		return;
	}
	put_esc(r);
	free(r);
}

static void put_cwd(void)
{
	static char buf[PATH_MAX + 1];
	memset(buf, 0xa5, sizeof buf);
	errno = 0;
	char *r = getcwd(buf, sizeof buf);
	if (r == NULL) {
		put_err(errno);
		return;
	}
	if (r != buf)
		out("NOT-CALLER-BUFFER ");
	put_esc(buf);
}

static void op_getcwd(const struct op *op, const char *path, const char *arg)
{
	(void)op;
	(void)path;
	(void)arg;
	put_cwd();
	errno = 0;
	char *r = getcwd(NULL, 0);
	out(" | alloc=");
	if (r == NULL) {
		put_err(errno);
	} else {
		put_esc(r);
		free(r);
	}
}

/* getcwd_small PATH [SIZE]: getcwd with a SIZE-byte buffer (default 4) */
static void op_getcwd_small(const struct op *op, const char *path, const char *arg)
{
	(void)op;
	(void)path;
	size_t sz = arg ? (size_t)strtoul(arg, NULL, 10) : 4;
	char buf[PATH_MAX + 8];
	if (sz > PATH_MAX)
		sz = PATH_MAX;
	memset(buf, 0xa5, sizeof buf);
	errno = 0;
	char *r = getcwd(sz ? buf : NULL, sz);
	if (r == NULL) {
		put_err(errno);
		return;
	}
	put_esc(r);
	if (r != buf)
		free(r);
}

static void op_gcdn(const struct op *op, const char *path, const char *arg)
{
	(void)op;
	(void)path;
	(void)arg;
	errno = 0;
	char *r = get_current_dir_name();
	if (r == NULL) {
		put_err(errno);
		return;
	}
	put_esc(r);
	free(r);
}

static void op_chdir(const struct op *op, const char *path, const char *arg)
{
	(void)arg;
	errno = 0;
	int r;
	if (op->kind == 1) { /* fchdir */
		int fd = open(path, O_RDONLY | O_DIRECTORY);
		if (fd < 0) {
			out("open=");
			put_err(errno);
			return;
		}
		errno = 0;
		r = fchdir(fd);
		int e = errno;
		close(fd);
		errno = e;
	} else {
		r = chdir(path);
	}
	if (r != 0) {
		put_err(errno);
		return;
	}
	out("cwd=");
	put_cwd();
}

/* ---- dirfd-relative ---- */

enum { R_OPENAT, R_FSTATAT, R_FSTATAT_NOFOLLOW, R_STATX, R_READLINKAT, R_FACCESSAT,
       R_FDOPENDIR };

static void op_rel(const struct op *op, const char *dirpath, const char *name)
{
	errno = 0;
	int dfd = open(dirpath, O_RDONLY | O_DIRECTORY);
	if (dfd < 0) {
		out("dirfd=");
		put_err(errno);
		return;
	}
	errno = 0;
	switch (op->kind) {
	case R_OPENAT: {
		int fd = openat(dfd, name, O_RDONLY);
		if (fd < 0)
			put_err(errno);
		else
			report_fd(fd);
		break;
	}
	case R_FSTATAT:
	case R_FSTATAT_NOFOLLOW: {
		struct stat st;
		memset(&st, 0xa5, sizeof st);
		if (fstatat(dfd, name, &st, op->kind == R_FSTATAT ? 0 : AT_SYMLINK_NOFOLLOW) != 0)
			put_err(errno);
		else
			put_stat(&st);
		break;
	}
	case R_STATX: {
		struct statx sx;
		memset(&sx, 0xa5, sizeof sx);
		if (statx(dfd, name, 0, STATX_BASIC_STATS | STATX_BTIME, &sx) != 0)
			put_err(errno);
		else
			put_statx(&sx);
		break;
	}
	case R_READLINKAT: {
		char buf[PATH_MAX + 1];
		memset(buf, 0xa5, sizeof buf);
		ssize_t n = readlinkat(dfd, name, buf, PATH_MAX);
		if (n < 0) {
			put_err(errno);
		} else {
			out("len=%zd target=", n);
			put_esc_n(buf, (size_t)n);
			out(" after=%02x", (unsigned char)buf[n]);
		}
		break;
	}
	case R_FACCESSAT:
		if (faccessat(dfd, name, R_OK, 0) != 0)
			put_err(errno);
		else
			out("0");
		break;
	case R_FDOPENDIR: {
		int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY);
		if (fd < 0) {
			put_err(errno);
			break;
		}
		DIR *dir = fdopendir(fd);
		if (dir == NULL) {
			out("fdopendir=");
			put_err(errno);
			close(fd);
			break;
		}
		list_dir(dir, 0, 0);
		closedir(dir);
		break;
	}
	}
	close(dfd);
}

/* ---- NULL path ---- */

enum { N_STAT, N_LSTAT, N_STAT64, N_FSTATAT, N_STATX, N_OPEN, N_OPENAT, N_ACCESS,
       N_FACCESSAT, N_READLINK, N_REALPATH, N_CHDIR, N_XSTAT };

static void op_null(const struct op *op, const char *path, const char *arg)
{
	(void)path;
	(void)arg;
	const char *np = null_path;
	struct stat st;
	struct statx sx;
	char buf[PATH_MAX + 1];
	long r = -1;
	errno = 0;
	switch (op->kind) {
	case N_STAT: r = stat(np, &st); break;
	case N_LSTAT: r = lstat(np, &st); break;
	case N_STAT64: r = stat64(np, (struct stat64 *)(void *)&st); break;
	case N_FSTATAT: r = fstatat(AT_FDCWD, np, &st, 0); break;
	case N_STATX: r = statx(AT_FDCWD, np, 0, STATX_BASIC_STATS, &sx); break;
	case N_OPEN: r = open(np, O_RDONLY); break;
	case N_OPENAT: r = openat(AT_FDCWD, np, O_RDONLY); break;
	case N_ACCESS: r = access(np, F_OK); break;
	case N_FACCESSAT: r = faccessat(AT_FDCWD, np, F_OK, 0); break;
	case N_READLINK: r = readlink(np, buf, PATH_MAX); break;
	case N_REALPATH: r = realpath(np, buf) == NULL ? -1 : 0; break;
	case N_CHDIR: r = chdir(np); break;
	case N_XSTAT: r = __xstat(STAT_VER, np, &st); break;
	}
	int e = errno;
	if (r >= 0) {
		out("SUCCEEDED ret=%ld", r);
		if ((op->kind == N_OPEN || op->kind == N_OPENAT))
			close((int)r);
		return;
	}
	put_err(e);
}

/* ------------------------------------------------------------------ */

static const struct op ops[] = {
	{"stat", op_stat, K_STAT, 0},
	{"lstat", op_stat, K_LSTAT, 0},
	{"stat64", op_stat, K_STAT64, 0},
	{"lstat64", op_stat, K_LSTAT64, 0},
	{"fstatat", op_stat, K_FSTATAT, 0},
	{"fstatat_nofollow", op_stat, K_FSTATAT_NOFOLLOW, 0},
	{"fstatat64", op_stat, K_FSTATAT64, 0},
	{"fstatat64_nofollow", op_stat, K_FSTATAT64_NOFOLLOW, 0},
	{"fstatat_emptypath", op_stat, K_FSTATAT_EMPTY, 0},
	{"__xstat", op_stat, K_XSTAT, 0},
	{"__lxstat", op_stat, K_LXSTAT, 0},
	{"__xstat64", op_stat, K_XSTAT64, 0},
	{"__lxstat64", op_stat, K_LXSTAT64, 0},
	{"__fxstatat", op_stat, K_FXSTATAT, 0},
	{"__fxstatat64", op_stat, K_FXSTATAT64, 0},
	{"__fxstatat64_nofollow", op_stat, K_FXSTATAT64_NOFOLLOW, 0},
	{"statx", op_statx, 0, 0},
	{"statx_nofollow", op_statx, AT_SYMLINK_NOFOLLOW, 0},
	{"statx_emptypath", op_statx, AT_EMPTY_PATH, 0},

	{"access", op_access, A_ACCESS, 1},
	{"faccessat", op_access, A_FACCESSAT, 1},
	{"faccessat_eaccess", op_access, A_FACCESSAT_EACCESS, 1},
	{"faccessat_nofollow", op_access, A_FACCESSAT_NOFOLLOW, 1},
	{"euidaccess", op_access, A_EUIDACCESS, 1},
	{"eaccess", op_access, A_EACCESS, 1},

	{"open", op_open, O_K_OPEN, 0},
	{"open64", op_open, O_K_OPEN64, 0},
	{"openat", op_open, O_K_OPENAT, 0},
	{"openat64", op_open, O_K_OPENAT64, 0},
	{"__open_2", op_open, O_K_OPEN_2, 0},
	{"__open64_2", op_open, O_K_OPEN64_2, 0},
	{"__openat_2", op_open, O_K_OPENAT_2, 0},
	{"__openat64_2", op_open, O_K_OPENAT64_2, 0},
	{"fdnum", op_fdnum, 0, 0},

	{"fopen", op_fopen, F_FOPEN, 0},
	{"fopen64", op_fopen, F_FOPEN64, 0},
	{"freopen", op_fopen, F_FREOPEN, 0},

	{"readdir", op_readdir, D_READDIR, 0},
	{"readdir32", op_readdir, D_READDIR32, 0},
	{"readdir_full", op_readdir, D_READDIR_FULL, 0},
	{"readdir_r", op_readdir_r, 0, 0},
	{"readdir64_r", op_readdir_r, 64, 0},
	{"scandir", op_scandir, 0, 0},
	{"scandir64", op_scandir, 64, 0},
	{"fdopendir", op_fdopendir, 0, 0},
	{"dirfd", op_dirfd, 0, 0},
	{"telldir", op_telldir, 0, 0},
	{"telldir_full", op_telldir, 1, 0},
	{"rewinddir", op_rewinddir, 0, 0},

	{"readlink", op_readlink, L_READLINK, 0},
	{"readlinkat", op_readlink, L_READLINKAT, 0},
	{"readlink_small", op_readlink, L_SMALL, 0},

	{"realpath", op_realpath, 0, 0},
	{"canonicalize_file_name", op_canon, 0, 0},
	{"getcwd", op_getcwd, 0, 0},
	{"getcwd_small", op_getcwd_small, 0, 0},
	{"get_current_dir_name", op_gcdn, 0, 0},
	{"chdir", op_chdir, 0, 0},
	{"fchdir", op_chdir, 1, 0},

	{"rel_openat", op_rel, R_OPENAT, 1},
	{"rel_fstatat", op_rel, R_FSTATAT, 1},
	{"rel_fstatat_nofollow", op_rel, R_FSTATAT_NOFOLLOW, 1},
	{"rel_statx", op_rel, R_STATX, 1},
	{"rel_readlinkat", op_rel, R_READLINKAT, 1},
	{"rel_faccessat", op_rel, R_FACCESSAT, 1},
	{"rel_fdopendir", op_rel, R_FDOPENDIR, 1},

	{"stat_null", op_null, N_STAT, 0},
	{"lstat_null", op_null, N_LSTAT, 0},
	{"stat64_null", op_null, N_STAT64, 0},
	{"fstatat_null", op_null, N_FSTATAT, 0},
	{"statx_null", op_null, N_STATX, 0},
	{"open_null", op_null, N_OPEN, 0},
	{"openat_null", op_null, N_OPENAT, 0},
	{"access_null", op_null, N_ACCESS, 0},
	{"faccessat_null", op_null, N_FACCESSAT, 0},
	{"readlink_null", op_null, N_READLINK, 0},
	{"realpath_null", op_null, N_REALPATH, 0},
	{"chdir_null", op_null, N_CHDIR, 0},
	{"__xstat_null", op_null, N_XSTAT, 0},
};

static int bad_lines;

/* raw_*: as written (for the echo); path/arg: decoded (may be NULL) */
static void run_probe(const char *raw_op, const char *raw_path, const char *raw_arg,
		      const char *path, const char *arg)
{
	put_echo(raw_op);
	if (raw_path) {
		out(" ");
		put_echo(raw_path);
	}
	if (raw_arg) {
		out(" ");
		put_echo(raw_arg);
	}
	out(" -> ");
	const struct op *op = NULL;
	for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
		if (strcmp(ops[i].name, raw_op) == 0) {
			op = &ops[i];
			break;
		}
	}
	if (op == NULL) {
		out("UNKNOWN-OP\n");
		bad_lines++;
		return;
	}
	if (raw_path != NULL && strcmp(raw_path, NULL_TOKEN) == 0) {
		/* glibc's opendir reads name[0] before any system call: a NULL
		 * path crashes natively, so there is nothing to compare */
		if (op->fn == op_readdir || op->fn == op_readdir_r || op->fn == op_scandir ||
		    op->fn == op_dirfd || op->fn == op_telldir || op->fn == op_rewinddir) {
			out("SKIP null-crashes-libc\n");
			return;
		}
		path = null_path;
	} else if (path == NULL) {
		path = ""; /* only meaningful for ops that ignore PATH */
	}
	if (op->need_arg && arg == NULL) {
		out("MISSING-ARG\n");
		bad_lines++;
		return;
	}
	op->fn(op, path, arg);
	out("\n");
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* decode a batch token in place semantics: returns malloc'd string */
static char *decode_token(const char *t)
{
	if (strcmp(t, "\"\"") == 0)
		return strdup("");
	size_t n = strlen(t);
	char *o = malloc(n + 1), *p = o;
	for (size_t i = 0; i < n; i++) {
		if (t[i] == '\\' && t[i + 1] == '\\') {
			*p++ = '\\';
			i++;
		} else if (t[i] == '\\' && t[i + 1] == 'x' && i + 3 < n + 1 &&
			   hexval(t[i + 2]) >= 0 && hexval(t[i + 3]) >= 0) {
			*p++ = (char)(hexval(t[i + 2]) * 16 + hexval(t[i + 3]));
			i += 3;
		} else {
			*p++ = t[i];
		}
	}
	*p = '\0';
	return o;
}

static int run_batch(const char *listfile)
{
	FILE *f = strcmp(listfile, "-") == 0 ? stdin : fopen(listfile, "re");
	if (f == NULL) {
		fprintf(stderr, "probe: cannot open %s: %s\n", listfile, strerror(errno));
		return 2;
	}
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	while ((len = getline(&line, &cap, f)) >= 0) {
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		char *tok[4] = {NULL, NULL, NULL, NULL};
		int nt = 0;
		char *save = NULL;
		for (char *t = strtok_r(line, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
			if (nt < 4)
				tok[nt] = t;
			nt++;
		}
		if (nt == 0 || tok[0][0] == '#')
			continue;
		if (nt > 3) {
			put_echo(tok[0]);
			out(" -> TOO-MANY-TOKENS\n");
			bad_lines++;
			continue;
		}
		char *p = tok[1] ? decode_token(tok[1]) : NULL;
		char *a = tok[2] ? decode_token(tok[2]) : NULL;
		run_probe(tok[0], tok[1], tok[2], p, a);
		free(p);
		free(a);
	}
	free(line);
	if (f != stdin)
		fclose(f);
	return bad_lines ? 3 : 0;
}

int main(int argc, char **argv)
{
	int rc;
	if (argc == 3 && strcmp(argv[1], "-f") == 0) {
		rc = run_batch(argv[2]);
	} else if (argc >= 2 && argc <= 4 && argv[1][0] != '-') {
		run_probe(argv[1], argc > 2 ? argv[2] : NULL, argc > 3 ? argv[3] : NULL,
			  argc > 2 ? argv[2] : NULL, argc > 3 ? argv[3] : NULL);
		rc = bad_lines ? 3 : 0;
	} else {
		fprintf(stderr, "usage: probe OP [PATH [ARG]]\n       probe -f LISTFILE\n");
		return 2;
	}
	if (fflush(stdout) != 0)
		return 4;
	return rc;
}
