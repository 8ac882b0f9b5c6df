/* Linked against libgone.so, which the test then deletes: ld.so fails
   at start-up ("error while loading shared libraries", status 127). */
#include <stdio.h>

void gone_fn(void);

int main(void)
{
    gone_fn();
    return 0;
}
