/* One library of the loader tests, named by -DNAME=x: its constructor
   prints "ctor x TAG", x_fn() prints "x_fn TAG" and calls NEXT's function
   when -DNEXT=y is given (a DT_NEEDED chain); x_ctor_runs() counts the
   constructor's runs. -DTAG="v2" builds a different-content variant. */
#include <stdio.h>

#define STR_(x) #x
#define STR(x) STR_(x)
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#ifndef TAG
#define TAG "v1"
#endif

#ifdef NEXT
void CAT(NEXT, _fn)(void);
#endif

static int runs;

__attribute__((constructor)) static void ctor(void)
{
    runs++;
    printf("ctor %s %s\n", STR(NAME), TAG);
}

int CAT(NAME, _ctor_runs)(void) { return runs; }

void CAT(NAME, _fn)(void)
{
    printf("%s_fn %s\n", STR(NAME), TAG);
#ifdef NEXT
    CAT(NEXT, _fn)();
#endif
}
