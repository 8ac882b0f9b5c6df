/*
 * closerange.c - a program that closes every descriptor but 0-2 first
 * thing, with close_range(3, ~0U, 0) (glibc's spawn helpers, systemd and
 * many daemons do), then probes its arguments.
 *
 *   closerange [-fill] PATH...
 *
 * For each PATH prints `PATH stat=<size|ERRNO> read=<bytes|ERRNO>`. With
 * -fill, first dups stdin until EMFILE (no path probed meanwhile), probes
 * every PATH (reads fail), closes those descriptors and probes again.
 *
 * Build: gcc -O1 -Wall -Wextra -Werror -o closerange closerange.c
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static void probe(int argc, char **argv, int first)
{
	for (int i = first; i < argc; i++) {
		struct stat st;
		char buf[4096];
		printf("%s stat=", argv[i]);
		if (stat(argv[i], &st) == 0)
			printf("%lld", (long long)st.st_size);
		else
			printf("errno%d", errno);
		int fd = open(argv[i], O_RDONLY);
		if (fd < 0) {
			printf(" read=errno%d\n", errno);
			continue;
		}
		ssize_t n, total = 0;
		while ((n = read(fd, buf, sizeof buf)) > 0)
			total += n;
		close(fd);
		printf(" read=%zd\n", total);
	}
}

int main(int argc, char **argv)
{
	if (syscall(SYS_close_range, 3U, ~0U, 0U) != 0) {
		printf("close_range: %s\n", strerror(errno));
		return 1;
	}
	int fill = argc > 1 && strcmp(argv[1], "-fill") == 0;
	if (fill) {
		int n = 0;
		while (dup(0) >= 0)
			n++;
		printf("filled %s\n", n > 0 ? "some" : "none");
		probe(argc, argv, 2);
		closefrom(3);
	}
	probe(argc, argv, 1 + fill);
	return 0;
}
