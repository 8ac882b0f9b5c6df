/* Failing loads: a bare name that exists nowhere, argv[1] (an absolute
   path that does not exist), and a library whose DT_NEEDED is missing.
   Prints each dlerror() text; the texts must not change under the cache. */
#include <dlfcn.h>
#include <stdio.h>

static void try(const char *name)
{
    void *h = dlopen(name, RTLD_NOW);
    printf("dlopen %s: %s\n", name, h ? "loaded" : dlerror());
}

int main(int argc, char **argv)
{
    try("libnothere.so");
    for (int i = 1; i < argc; i++)
        try(argv[i]);
    try("libneedsgone.so");
    return 0;
}
