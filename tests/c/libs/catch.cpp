// libcatch.so: catches what libthrow.so throws, by its own type.
#include <cstdio>

#include "myerr.hpp"

__attribute__((constructor)) static void ctor() { std::printf("ctor catch v1\n"); }

const char *catch_in_lib(int code)
{
    try {
        do_throw(code);
    } catch (const MyErr &e) {
        std::printf("libcatch caught MyErr code=%d what=%s\n", e.code, e.what());
        return "MyErr";
    } catch (...) {
        return "something else";
    }
    return "nothing";
}
