/* Paths a user can see: dladdr() of a function in liba, the
   dl_iterate_phdr() names of the chain's libraries, readlink(
   "/proc/self/exe"), dlerror() of a dlsym() that fails and of a
   dlopen(RTLD_NOW) of a library with an unresolved symbol. With the
   argument "maps", also the files /proc/self/maps shows for them. */
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void a_fn(void);

static const char *const OURS[] = {"liba.so", "libb.so", "libc_chain.so"};

static int ours(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    for (size_t i = 0; i < sizeof OURS / sizeof *OURS; i++)
        if (strcmp(base, OURS[i]) == 0)
            return 1;
    return 0;
}

static int phdr(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    (void)data;
    if (ours(info->dlpi_name))
        printf("dl_iterate_phdr: %s\n", info->dlpi_name);
    return 0;
}

int main(int argc, char **argv)
{
    a_fn();
    Dl_info di;
    if (dladdr((void *)a_fn, &di))
        printf("dladdr a_fn: %s\n", di.dli_fname);
    else
        printf("dladdr a_fn: failed\n");
    dl_iterate_phdr(phdr, NULL);

    /* Each mapped file once, in address order. */
    FILE *maps = argc > 1 && strcmp(argv[1], "maps") == 0 ? fopen("/proc/self/maps", "r") : NULL;
    char line[4096], last[4096] = "";
    while (maps && fgets(line, sizeof line, maps)) {
        char *p = strchr(line, '/');
        if (!p)
            continue;
        p[strcspn(p, "\n")] = 0;
        if (ours(p) && strcmp(p, last) != 0) {
            printf("maps: %s\n", p);
            snprintf(last, sizeof last, "%s", p);
        }
    }
    if (maps)
        fclose(maps);

    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n < 0 ? 0 : n] = 0;
    printf("/proc/self/exe: %s\n", exe);

    void *a = dlopen("liba.so", RTLD_NOW | RTLD_NOLOAD);
    if (!a) {
        printf("dlopen liba.so NOLOAD: %s\n", dlerror());
        return 1;
    }
    printf("dlsym no_such_symbol: %s\n", dlsym(a, "no_such_symbol") ? "found" : dlerror());
    void *u = dlopen("libunres.so", RTLD_NOW);
    printf("dlopen libunres.so: %s\n", u ? "loaded" : dlerror());
    return 0;
}
