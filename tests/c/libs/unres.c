/* libunres.so: references a symbol no object defines, so
   dlopen(RTLD_NOW) fails with "<path>: undefined symbol: nowhere_fn". */
void nowhere_fn(void);

void unres_fn(void) { nowhere_fn(); }
