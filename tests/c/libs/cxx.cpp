// C++ exceptions across libraries: thrown in libthrow.so, caught here (by
// the class, then as std::exception with its typeid) and in libcatch.so.
#include <cstdio>
#include <typeinfo>

#include "myerr.hpp"

int main()
{
    try {
        do_throw(7);
    } catch (const MyErr &e) {
        std::printf("main caught MyErr code=%d what=%s\n", e.code, e.what());
    }
    try {
        do_throw(8);
    } catch (const std::exception &e) {
        std::printf("main caught std::exception typeid=%s what=%s\n", typeid(e).name(), e.what());
    }
    std::printf("libcatch returned %s\n", catch_in_lib(9));
    return 0;
}
