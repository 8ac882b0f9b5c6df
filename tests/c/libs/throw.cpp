// libthrow.so: throws MyErr, whose typeinfo is defined here.
#include <cstdio>

#include "myerr.hpp"

MyErr::MyErr(const std::string &what, int c) : std::runtime_error(what), code(c) {}
MyErr::~MyErr() {}

__attribute__((constructor)) static void ctor() { std::printf("ctor throw v1\n"); }

void do_throw(int code) { throw MyErr("thrown in libthrow", code); }
