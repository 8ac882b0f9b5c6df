/* dlopen one library by several spellings: the bare name (found through
   RUNPATH), then each argv[i] (absolute paths); every handle must be the
   first one and the constructor must have run once. */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    void *first = dlopen("libonce.so", RTLD_NOW);
    if (!first) {
        printf("dlopen libonce.so: %s\n", dlerror());
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        void *h = dlopen(argv[i], RTLD_NOW);
        printf("spelling %d: %s\n", i, !h ? dlerror() : h == first ? "same handle" : "OTHER HANDLE");
    }
    int (*runs)(void) = (int (*)(void))dlsym(first, "once_ctor_runs");
    printf("once ctor runs: %d\n", runs ? runs() : -1);
    return 0;
}
