// The exception class libthrow.so throws; its key function (the
// destructor) is defined in throw.cpp, so its typeinfo and vtable live in
// libthrow.so only and a catch elsewhere must match them across objects.
#include <stdexcept>
#include <string>

struct MyErr : std::runtime_error {
    int code;
    MyErr(const std::string &what, int code);
    ~MyErr() override;
};

void do_throw(int code);
const char *catch_in_lib(int code);
