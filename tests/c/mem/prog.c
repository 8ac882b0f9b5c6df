/* Loads three sizable libraries (tests/c/mem/lib.c): libmem1.so and
 * libmem2.so as DT_NEEDED (found through the executable's RUNPATH,
 * $ORIGIN/../lib), libmem3.so by dlopen of its bare name (the same RUNPATH
 * search, done by ld.so at run time). Touches every page of each, prints
 * the checksums, then "ready", and waits on stdin: the parent measures
 * /proc/PID/smaps while it waits, then writes a line (or closes stdin) to
 * let it exit 0.
 *
 *   gcc -O1 -Wall -o bin/memprog prog.c -Llib -lmem1 -lmem2 \
 *       -Wl,--no-as-needed -Wl,--enable-new-dtags,-rpath,'$ORIGIN/../lib'
 */
#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>

unsigned long memlib1_touch(void);
unsigned long memlib2_touch(void);

int main(void)
{
    unsigned long a = memlib1_touch();
    unsigned long b = memlib2_touch();
    void *h = dlopen("libmem3.so", RTLD_NOW);
    if (!h) {
        fprintf(stderr, "memprog: dlopen libmem3.so: %s\n", dlerror());
        return 2;
    }
    unsigned long (*touch3)(void) = (unsigned long (*)(void))dlsym(h, "memlib3_touch");
    if (!touch3) {
        fprintf(stderr, "memprog: dlsym memlib3_touch: %s\n", dlerror());
        return 2;
    }
    unsigned long c = touch3();
    printf("checksum %016lx %016lx %016lx\nready\n", a, b, c);
    fflush(stdout);
    /* One read: any line, or end of file, means exit. */
    char buf[64];
    if (read(0, buf, sizeof buf) < 0) {
        perror("memprog: read stdin");
        return 3;
    }
    return 0;
}
