/*
 * spawn.c - process creation under the fmcache preload library.
 *
 *   spawn exec PATH...        each PATH through fork+execve, vfork+execve
 *                             and posix_spawn (environ): errno or exit status
 *   spawn vfork N PATH...     N times vfork + execve(self, explicit envp):
 *                             the first child runs `spawn child PATH...`,
 *                             the others `spawn true`; checks after each
 *                             that the parent's memory and environ are intact
 *   spawn vfork_exit N        N times vfork + _exit(0), same checks
 *   spawn vfork_corrupt N     the same, but the child flips a heap byte:
 *                             the checks must report CORRUPT (exit 1)
 *   spawn child PATH...       prints its environment (`env K=V`, sorted) and,
 *                             per PATH, stat (no atime) and the bytes' hash
 *   spawn true                exits 0
 *
 * The explicit envp of `vfork` is environ without LD_AUDIT plus
 * SPAWN_USER_VAR=kept: the library's exec hook must add LD_AUDIT back (on
 * its own stack: a vfork child shares the parent's memory).
 *
 * Output is deterministic: compare a native run with a preloaded one.
 * Build: gcc -O1 -Wall -Wextra -Werror -o spawn spawn.c
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "errname.h"

extern char **environ;

static void put_err(int e)
{
	const char *name = errname(e);
	if (name)
		printf("ERR %s", name);
	else
		printf("ERR %d", e);
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= UINT64_C(0x100000001b3);
	}
	return h;
}

static void put_status(int st)
{
	if (WIFEXITED(st))
		printf("exit=%d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		printf("signal=%d", WTERMSIG(st));
	else
		printf("status=%#x", st);
}

/* ---- exec ---- */

static volatile int vfork_errno;

static void exec_one(const char *path)
{
	char *argv[] = {(char *)path, NULL};
	int st;

	/* fork + execve: the child's errno comes back through a CLOEXEC pipe */
	int p[2];
	if (pipe2(p, O_CLOEXEC) != 0) {
		perror("pipe2");
		exit(2);
	}
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		execve(path, argv, environ);
		int e = errno;
		if (write(p[1], &e, sizeof e) != (ssize_t)sizeof e)
			_exit(126);
		_exit(127);
	}
	close(p[1]);
	int e = 0;
	ssize_t n = read(p[0], &e, sizeof e);
	close(p[0]);
	waitpid(pid, &st, 0);
	printf("fork_execve %s -> ", path);
	if (n == (ssize_t)sizeof e)
		put_err(e);
	else
		put_status(st);
	printf("\n");

	/* vfork + execve: the child shares our memory, so it can leave errno */
	vfork_errno = 0;
	fflush(stdout);
	pid = vfork();
	if (pid == 0) {
		execve(path, argv, environ);
		vfork_errno = errno;
		_exit(127);
	}
	waitpid(pid, &st, 0);
	printf("vfork_execve %s -> ", path);
	if (vfork_errno != 0)
		put_err(vfork_errno);
	else
		put_status(st);
	printf("\n");

	/* posix_spawn: glibc reports the exec failure as the return value */
	fflush(stdout);
	int r = posix_spawn(&pid, path, NULL, NULL, argv, environ);
	printf("posix_spawn %s -> ", path);
	if (r != 0) {
		put_err(r);
	} else {
		waitpid(pid, &st, 0);
		put_status(st);
	}
	printf("\n");
	fflush(stdout);
}

/* ---- vfork loops ---- */

#define HEAP_BYTES 65536
#define STACK_BYTES 4096

struct snapshot {
	char **environ_ptr;
	size_t env_count;
	uint64_t env_hash; /* the pointers and the strings */
	uint64_t heap_hash;
	uint64_t envp_hash;
};

static uint64_t env_hash(char **env, size_t *count)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	size_t n = 0;
	for (; env && env[n]; n++) {
		h = fnv1a(h, &env[n], sizeof env[n]);
		h = fnv1a(h, env[n], strlen(env[n]) + 1);
	}
	*count = n;
	return h;
}

static void take(struct snapshot *s, const unsigned char *heap, char **envp)
{
	size_t dummy;
	s->environ_ptr = environ;
	s->env_hash = env_hash(environ, &s->env_count);
	s->heap_hash = fnv1a(UINT64_C(0xcbf29ce484222325), heap, HEAP_BYTES);
	s->envp_hash = envp ? env_hash(envp, &dummy) : 0;
}

static int same(const struct snapshot *a, const struct snapshot *b)
{
	return a->environ_ptr == b->environ_ptr && a->env_count == b->env_count &&
	       a->env_hash == b->env_hash && a->heap_hash == b->heap_hash &&
	       a->envp_hash == b->envp_hash;
}

/* vfork in functions of their own: the child execs or exits in there and
 * never returns, and the caller's variables are not live across vfork. */
static __attribute__((noinline)) pid_t start_exec(const char *self, char **argv, char **envp)
{
	pid_t pid = vfork();
	if (pid == 0) {
		execve(self, argv, envp);
		_exit(127);
	}
	return pid;
}

/* vfork_corrupt: the child writes here, to show the checks would see it */
static unsigned char *volatile corrupt_target;

static __attribute__((noinline)) pid_t start_exit(void)
{
	pid_t pid = vfork();
	if (pid == 0) {
		if (corrupt_target)
			corrupt_target[0] ^= 1;
		_exit(0);
	}
	return pid;
}

static int vfork_loop(long n, int do_exec, int corrupt, const char *self, char **paths,
		      int npaths)
{
	unsigned char *heap = malloc(HEAP_BYTES);
	volatile unsigned char stack[STACK_BYTES];
	if (heap == NULL)
		return 2;
	for (size_t i = 0; i < HEAP_BYTES; i++)
		heap[i] = (unsigned char)(i * 7 + 3);
	for (size_t i = 0; i < STACK_BYTES; i++)
		stack[i] = (unsigned char)(i * 13 + 5);

	/* explicit envp: environ minus LD_AUDIT, plus a variable of ours */
	size_t ne = 0;
	while (environ[ne])
		ne++;
	char **envp = calloc(ne + 2, sizeof *envp);
	size_t k = 0;
	for (size_t i = 0; i < ne; i++)
		if (strncmp(environ[i], "LD_AUDIT=", 9) != 0)
			envp[k++] = environ[i];
	envp[k++] = "SPAWN_USER_VAR=kept";
	envp[k] = NULL;

	char *child_argv[4 + 64] = {(char *)self, "child", NULL};
	for (int i = 0; i < npaths && i < 64; i++)
		child_argv[2 + i] = paths[i];
	child_argv[2 + (npaths < 64 ? npaths : 64)] = NULL;
	char *true_argv[] = {(char *)self, "true", NULL};

	struct snapshot before, after;
	if (corrupt)
		corrupt_target = heap;
	take(&before, heap, do_exec ? envp : NULL);
	long bad = -1;
	const char *what = "";
	for (long i = 0; i < n; i++) {
		fflush(stdout);
		pid_t pid = do_exec ? start_exec(self, i == 0 ? child_argv : true_argv, envp)
				    : start_exit();
		if (pid < 0) {
			perror("vfork");
			return 2;
		}
		int st;
		if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			printf("child %ld: ", i);
			put_status(st);
			printf("\n");
			return 1;
		}
		take(&after, heap, do_exec ? envp : NULL);
		if (!same(&before, &after)) {
			bad = i;
			what = "environ, heap or envp";
			break;
		}
		for (size_t j = 0; j < STACK_BYTES; j++) {
			if (stack[j] != (unsigned char)(j * 13 + 5)) {
				bad = i;
				what = "stack";
				break;
			}
		}
		if (bad >= 0)
			break;
		/* the allocator still works after the child ran in our memory */
		void *m = malloc(1000 + (size_t)i);
		if (m == NULL) {
			bad = i;
			what = "malloc";
			break;
		}
		free(m);
	}
	if (bad >= 0) {
		printf("CORRUPT after child %ld: %s\n", bad, what);
		return 1;
	}
	printf("%s n=%ld parent intact\n", do_exec ? "vfork_execve" : "vfork_exit", n);
	free(envp);
	free(heap);
	return 0;
}

/* ---- child ---- */

static int cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int child(char **paths, int n)
{
	size_t ne = 0;
	while (environ[ne])
		ne++;
	char **sorted = malloc((ne + 1) * sizeof *sorted);
	memcpy(sorted, environ, ne * sizeof *sorted);
	qsort(sorted, ne, sizeof *sorted, cmp);
	for (size_t i = 0; i < ne; i++)
		printf("env %s\n", sorted[i]);
	free(sorted);
	static char buf[65536];
	for (int i = 0; i < n; i++) {
		struct stat st;
		printf("probe %s -> ", paths[i]);
		if (stat(paths[i], &st) != 0) {
			put_err(errno);
			printf("\n");
			continue;
		}
		printf("ino=%ju mode=%o size=%jd mtime=%jd.%09ld", (uintmax_t)st.st_ino,
		       (unsigned)st.st_mode, (intmax_t)st.st_size, (intmax_t)st.st_mtim.tv_sec,
		       st.st_mtim.tv_nsec);
		int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			printf(" open=");
			put_err(errno);
		} else {
			uint64_t h = UINT64_C(0xcbf29ce484222325);
			ssize_t r;
			while ((r = read(fd, buf, sizeof buf)) > 0)
				h = fnv1a(h, buf, (size_t)r);
			printf(" read=%016" PRIx64, h);
			close(fd);
		}
		printf("\n");
	}
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "true") == 0)
		return 0;
	if (argc >= 2 && strcmp(argv[1], "child") == 0)
		return child(argv + 2, argc - 2);
	if (argc >= 3 && strcmp(argv[1], "exec") == 0) {
		for (int i = 2; i < argc; i++)
			exec_one(argv[i]);
		return 0;
	}
	if (argc >= 3 && (strcmp(argv[1], "vfork") == 0 || strcmp(argv[1], "vfork_exit") == 0 ||
			  strcmp(argv[1], "vfork_corrupt") == 0)) {
		char self[PATH_MAX];
		ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
		if (n <= 0)
			return 2;
		self[n] = '\0';
		int do_exec = strcmp(argv[1], "vfork") == 0;
		int corrupt = strcmp(argv[1], "vfork_corrupt") == 0;
		return vfork_loop(atol(argv[2]), do_exec, corrupt, self, argv + 3, argc - 3);
	}
	fprintf(stderr, "usage: spawn exec PATH... | vfork N [PATH...] | vfork_exit N | "
			"child [PATH...] | true\n");
	return 2;
}
