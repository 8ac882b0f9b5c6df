/* DT_NEEDED libx.so.1 (libx.so -> libx.so.1 -> libx.so.1.2.3), then
   dlopen("libx.so"): the same object, its constructor not run again. */
#include <dlfcn.h>
#include <stdio.h>

void x_fn(void);
int x_ctor_runs(void);

int main(void)
{
    x_fn();
    void *h = dlopen("libx.so", RTLD_NOW);
    if (!h) {
        printf("dlopen libx.so: %s\n", dlerror());
        return 1;
    }
    printf("dlopen libx.so: same object as DT_NEEDED: %s\n",
           dlsym(h, "x_fn") == (void *)x_fn ? "yes" : "no");
    printf("x ctor runs: %d\n", x_ctor_runs());
    return 0;
}
