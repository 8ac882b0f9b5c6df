/* exe -> liba -> libb -> libc_chain (DT_NEEDED, through RUNPATHs). */
#include <stdio.h>

void a_fn(void);

int main(void)
{
    printf("main\n");
    a_fn();
    return 0;
}
