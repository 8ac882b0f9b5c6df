/*
 * readfiles.c - tiny stand-in for an application reading its inputs.
 *
 *   readfiles FILE...        for each FILE: open(O_RDONLY) + read() to EOF
 *   readfiles -f LISTFILE    same, one path per line (whole line)
 *
 * Prints one line per file:
 *   PATH SIZE FNV64          (FNV-1a 64-bit of the content, 16 hex digits)
 *   PATH ERR <errno-name>    when open or read fails
 *
 * Build: gcc -O1 -Wall -Wextra -Werror -o readfiles readfiles.c
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "errname.h"

static void put_path(const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c > 0x20 && c < 0x7f && c != '\\')
			putchar(c);
		else
			printf("\\x%02x", c);
	}
}

static void put_err(int e)
{
	const char *name = errname(e);
	if (name)
		printf("ERR %s", name);
	else
		printf("ERR %d", e);
}

static char buf[65536];

static void read_one(const char *path)
{
	put_path(path);
	putchar(' ');
	errno = 0;
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		put_err(errno);
		putchar('\n');
		return;
	}
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	long long total = 0;
	for (;;) {
		errno = 0;
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0) {
			put_err(errno);
			putchar('\n');
			close(fd);
			return;
		}
		if (n == 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			h ^= (unsigned char)buf[i];
			h *= UINT64_C(0x100000001b3);
		}
		total += n;
	}
	close(fd);
	printf("%lld %016" PRIx64 "\n", total, h);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "-f") == 0) {
		FILE *f = fopen(argv[2], "re");
		if (f == NULL) {
			fprintf(stderr, "readfiles: cannot open %s: %s\n", argv[2], strerror(errno));
			return 2;
		}
		char *line = NULL;
		size_t cap = 0;
		ssize_t len;
		while ((len = getline(&line, &cap, f)) >= 0) {
			while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
				line[--len] = '\0';
			if (len == 0 || line[0] == '#')
				continue;
			read_one(line);
		}
		free(line);
		fclose(f);
	} else {
		for (int i = 1; i < argc; i++)
			read_one(argv[i]);
	}
	return fflush(stdout) == 0 ? 0 : 4;
}
