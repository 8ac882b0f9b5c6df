/* libhost.so (RUNPATH $ORIGIN/sub): dlopens a bare name, so ld.so
   searches this library's RUNPATH, with $ORIGIN = its own directory. */
#include <dlfcn.h>
#include <stdio.h>

void host_run(void)
{
    void *h = dlopen("libplugin.so", RTLD_NOW);
    if (!h) {
        printf("dlopen libplugin.so: %s\n", dlerror());
        return;
    }
    void (*fn)(void) = (void (*)(void))dlsym(h, "plugin_fn");
    if (!fn) {
        printf("dlsym plugin_fn: %s\n", dlerror());
        return;
    }
    fn();
}
