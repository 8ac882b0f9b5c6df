/* exe -> libhost.so, which dlopens "libplugin.so" from $ORIGIN/sub. */
#include <stdio.h>

void host_run(void);

int main(void)
{
    printf("main\n");
    host_run();
    return 0;
}
