/* fds: old descriptors and mappings after the file changes, and per-thread
 * cwd. Prints only facts that do not depend on inode numbers or times, so
 * a native run on one tree and a served run on an identical tree compare
 * byte-for-byte.
 *
 *   fds look FILE                 open, read, close (a pilot's probe)
 *   fds rewrite FILE              in place: open(O_WRONLY|O_TRUNC) + write
 *   fds truncate FILE             truncate(FILE, 3)
 *   fds replace FILE              write FILE.new, rename it over FILE
 *   fds unlink FILE               unlink(FILE)
 *   fds chmod FILE                chmod(FILE, 0600)
 *   fds maponly FILE              MAP_SHARED, close the fd, rewrite in place
 *
 * Before the change each holds: fd1 (read 3 bytes, offset 3), fd2 = dup(fd1)
 * (shares the offset), fd3 (O_CLOEXEC, own offset 0) and a MAP_SHARED
 * mapping of fd1. After: `fd1 ...`, `fd2 ...`, `fd3 ...`, `map ...` lines.
 *
 *   fds viasymlink DIR            fd opened as DIR/ln (-> f), DIR/f rewritten
 *   fds dirmove DIR               fd on DIR/d/f, DIR/d renamed to DIR/d2,
 *                                 DIR/d2/f rewritten in place
 *   fds lookall DIR               open DIR/ln, DIR/d/f (the pilot)
 *
 *   fds cwd ROOT D1 D2            per-thread cwd, see cwd_test()
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char NEW[] = "the new contents, longer than before\n";

static uint64_t fnv(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static void die(const char *what)
{
	printf("FAIL %s: %s\n", what, strerror(errno));
	exit(1);
}

/* The bytes of `fd` from `off` (pread) or from its offset (read). */
static void show_bytes(const char *tag, int fd, off_t off)
{
	char buf[4096];
	ssize_t n = off < 0 ? read(fd, buf, sizeof buf) : pread(fd, buf, sizeof buf, off);
	if (n < 0) {
		printf(" %s=ERR %d", tag, errno);
		return;
	}
	printf(" %s=%zd:\"", tag, n);
	for (ssize_t i = 0; i < n && i < 40; i++)
		putchar(buf[i] == '\n' ? '|' : buf[i] >= ' ' && buf[i] < 127 ? buf[i] : '.');
	printf("\"");
}

/* What a replace detector and a reader see on `fd` against `path`. */
static void show_fd(const char *tag, int fd, const char *path)
{
	struct stat f, p;
	printf("%s", tag);
	if (fstat(fd, &f) != 0) {
		printf(" fstat=ERR %d\n", errno);
		return;
	}
	int pe = stat(path, &p) == 0 ? 0 : errno;
	printf(" size=%lld nlink=%lu mode=%o", (long long)f.st_size, (unsigned long)f.st_nlink,
	       (unsigned)f.st_mode);
	if (pe)
		printf(" path=ERR %d", pe);
	else
		printf(" same_inode=%s path_size=%lld", f.st_ino == p.st_ino && f.st_dev == p.st_dev ? "yes" : "REPLACED",
		       (long long)p.st_size);
	printf(" offset=%lld", (long long)lseek(fd, 0, SEEK_CUR));
	int fl = fcntl(fd, F_GETFD);
	printf(" cloexec=%d", fl >= 0 && (fl & FD_CLOEXEC));
	show_bytes("pread", fd, 0);
	show_bytes("read", fd, -1);
	printf("\n");
}

static void show_map(const char *m, size_t len)
{
	printf("map len=%zu \"", len);
	for (size_t i = 0; i < len && i < 40; i++)
		putchar(m[i] == '\n' ? '|' : m[i] >= ' ' && m[i] < 127 ? m[i] : '.');
	printf("\" fnv=%016llx\n", (unsigned long long)fnv(m, len));
}

static void rewrite(const char *path)
{
	int w = open(path, O_WRONLY | O_TRUNC);
	if (w < 0)
		die("open for writing");
	if (write(w, NEW, sizeof NEW - 1) != (ssize_t)(sizeof NEW - 1))
		die("write");
	close(w);
}

static int change(const char *how, const char *path)
{
	char tmp[4096];
	if (strcmp(how, "rewrite") == 0) {
		rewrite(path);
	} else if (strcmp(how, "truncate") == 0) {
		if (truncate(path, 3) != 0)
			die("truncate");
	} else if (strcmp(how, "replace") == 0) {
		snprintf(tmp, sizeof tmp, "%s.new", path);
		FILE *f = fopen(tmp, "w");
		if (!f || fputs(NEW, f) < 0 || fclose(f) != 0)
			die("write .new");
		if (rename(tmp, path) != 0)
			die("rename");
	} else if (strcmp(how, "unlink") == 0) {
		if (unlink(path) != 0)
			die("unlink");
	} else if (strcmp(how, "chmod") == 0) {
		if (chmod(path, 0600) != 0)
			die("chmod");
	} else {
		return -1;
	}
	return 0;
}

static int descriptors(const char *how, const char *path)
{
	char buf[64];
	int fd1 = open(path, O_RDONLY);
	if (fd1 < 0)
		die("open");
	if (strcmp(how, "look") == 0) {
		show_fd("fd1", fd1, path);
		return 0;
	}
	if (read(fd1, buf, 3) != 3)
		die("read 3");
	int fd2 = dup(fd1);
	int fd3 = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd2 < 0 || fd3 < 0 || fstat(fd1, &st) != 0)
		die("dup/open/fstat");
	size_t len = (size_t)st.st_size;
	char *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd1, 0);
	if (m == MAP_FAILED)
		die("mmap");
	if (strcmp(how, "maponly") == 0) {
		close(fd1);
		close(fd2);
		close(fd3);
		rewrite(path);
		show_map(m, len);
		return 0;
	}
	if (change(how, path) != 0) {
		printf("unknown change %s\n", how);
		return 2;
	}
	show_fd("fd1", fd1, path);
	show_fd("fd2", fd2, path);
	show_fd("fd3", fd3, path);
	show_map(m, len);
	return 0;
}

/* ---- per-thread cwd ---- */

static const char *root;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int step;

static void wait_step(int s)
{
	pthread_mutex_lock(&mu);
	while (step < s)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
}

static void set_step(int s)
{
	pthread_mutex_lock(&mu);
	step = s;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

/* Relative probes, printed with the thread's tag. */
static void look(const char *tag)
{
	char buf[4096], *r;
	struct stat st;
	int fd;
	printf("%s:", tag);
	if (getcwd(buf, sizeof buf))
		printf(" cwd=%s", strncmp(buf, root, strlen(root)) == 0 ? buf + strlen(root) : buf);
	else
		printf(" cwd=ERR %d", errno);
	if (stat("f", &st) == 0)
		printf(" stat=%lld", (long long)st.st_size);
	else
		printf(" stat=ERR %d", errno);
	if (access("only1", F_OK) == 0)
		printf(" only1=yes");
	else
		printf(" only1=ERR %d", errno);
	fd = open("f", O_RDONLY);
	if (fd >= 0) {
		ssize_t n = read(fd, buf, sizeof buf);
		printf(" read=\"%.*s\"", n > 0 ? (int)n - 1 : 0, buf);
		close(fd);
	} else {
		printf(" open=ERR %d", errno);
	}
	r = realpath("f", NULL);
	if (r) {
		printf(" realpath=%s", strncmp(r, root, strlen(root)) == 0 ? r + strlen(root) : r);
		free(r);
	} else {
		printf(" realpath=ERR %d", errno);
	}
	printf("\n");
	fflush(stdout);
}

static const char *d1, *d2;

static void *own_thread(void *arg)
{
	(void)arg;
	look("A before unshare");
	if (unshare(CLONE_FS) != 0)
		die("unshare");
	if (chdir(d2) != 0)
		die("chdir d2");
	look("A after chdir d2");
	pid_t child = fork();
	if (child == 0) {
		look("fork child of A");
		if (chdir("..") != 0)
			_exit(1);
		look("fork child of A after chdir ..");
		_exit(0);
	}
	waitpid(child, NULL, 0);
	set_step(1);
	wait_step(2);
	look("A after main chdir sub");
	set_step(3);
	return NULL;
}

static void *plain_thread(void *arg)
{
	look((const char *)arg);
	return NULL;
}

/* A thread created by the unshared thread shares its fs, not main's. */
static void *creator_thread(void *arg)
{
	(void)arg;
	pthread_t t;
	if (unshare(CLONE_FS) != 0 || chdir(d2) != 0)
		die("unshare/chdir");
	pthread_create(&t, NULL, plain_thread, "C child of unshared thread");
	pthread_join(t, NULL);
	return NULL;
}

static int clone_child(void *arg)
{
	(void)arg;
	if (chdir(d2) != 0)
		return 1;
	look("clone child after chdir d2");
	return 0;
}

static int cwd_test(void)
{
	pthread_t a;
	if (chdir(d1) != 0)
		die("chdir d1");
	look("main start");
	pthread_create(&a, NULL, own_thread, NULL);
	wait_step(1);
	look("main after A chdir");
	if (chdir("sub") != 0)
		die("chdir sub");
	look("main after chdir sub");
	set_step(2);
	wait_step(3);
	pthread_join(a, NULL);
	look("main after A");

	pthread_create(&a, NULL, creator_thread, NULL);
	pthread_join(a, NULL);
	look("main after C");

	/* clone without CLONE_FS, sharing memory: its chdir is its own */
	size_t sz = 256 * 1024;
	char *stack = malloc(sz);
	int pid = clone(clone_child, stack + sz, CLONE_VM | CLONE_VFORK | SIGCHLD, NULL);
	if (pid < 0)
		die("clone");
	int status;
	waitpid(pid, &status, 0);
	printf("clone child status=%d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	look("main after clone child");

	/* clone sharing our fs but not our memory: its chdir moves ours */
	pid = clone(clone_child, stack + sz, CLONE_FS | SIGCHLD, NULL);
	if (pid < 0)
		die("clone CLONE_FS");
	waitpid(pid, &status, 0);
	printf("CLONE_FS child status=%d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	look("main after CLONE_FS child chdir d2");
	free(stack);
	return 0;
}

/* Changes that reach a served file by another path than it was opened by. */
static int other_path(const char *how, const char *dir)
{
	char a[4096], b[4096], c[4096];
	if (strcmp(how, "lookall") == 0) {
		const char *names[] = {"ln", "d/f"};
		for (int i = 0; i < 2; i++) {
			snprintf(a, sizeof a, "%s/%s", dir, names[i]);
			int fd = open(a, O_RDONLY);
			show_fd(names[i], fd, a);
			close(fd);
		}
		return 0;
	}
	if (strcmp(how, "viasymlink") == 0) {
		snprintf(a, sizeof a, "%s/ln", dir);
		snprintf(b, sizeof b, "%s/f", dir);
		int fd = open(a, O_RDONLY);
		if (fd < 0)
			die("open ln");
		rewrite(b);
		show_fd("fd via ln", fd, b);
		return 0;
	}
	if (strcmp(how, "dirmove") == 0) {
		snprintf(a, sizeof a, "%s/d/f", dir);
		snprintf(b, sizeof b, "%s/d", dir);
		snprintf(c, sizeof c, "%s/d2", dir);
		int fd = open(a, O_RDONLY);
		if (fd < 0)
			die("open d/f");
		if (rename(b, c) != 0)
			die("rename d d2");
		snprintf(a, sizeof a, "%s/d2/f", dir);
		rewrite(a);
		show_fd("fd on d/f", fd, a);
		return 0;
	}
	return -1;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 3) {
		int r = other_path(argv[1], argv[2]);
		if (r >= 0)
			return r;
		return descriptors(argv[1], argv[2]);
	}
	if (argc == 5 && strcmp(argv[1], "cwd") == 0) {
		root = argv[2];
		d1 = argv[3];
		d2 = argv[4];
		return cwd_test();
	}
	fprintf(stderr, "usage: fds look|rewrite|truncate|replace|unlink|chmod|maponly FILE\n"
			"       fds cwd ROOT D1 D2\n");
	return 2;
}
