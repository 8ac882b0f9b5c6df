/* One sizable shared library for tests/tests/memory.rs and bench/memory.sh.
 *
 * Built once per library with
 *   gcc -O1 -fPIC -shared -DTOUCH=memlibN_touch -DRO_BLOB='"ro.bin"'
 *       -DTEXT_BLOB='"text.bin"' -o libmemN.so lib.c
 * RO_BLOB's bytes land in .rodata (a read-only file mapping) and TEXT_BLOB's
 * in .text (the r-x mapping), so both kinds of shared, clean, file-backed
 * pages are present. TOUCH() reads every byte of both (so every page is
 * faulted in and counted in Rss) and calls the real functions below; it
 * returns a checksum that depends only on the blobs' contents. */
#include <stddef.h>

#ifndef TOUCH
#error "define TOUCH (the exported function's name)"
#endif

/* Page-aligned blobs, hidden so that the same names in three libraries
 * never interpose on each other. */
__asm__(".pushsection .rodata\n"
        ".balign 4096\n"
        ".globl mem_ro_start\n.hidden mem_ro_start\n"
        "mem_ro_start:\n.incbin \"" RO_BLOB "\"\n"
        ".globl mem_ro_end\n.hidden mem_ro_end\n"
        "mem_ro_end:\n"
        ".popsection\n"
        ".pushsection .text\n"
        ".balign 4096\n"
        ".globl mem_text_start\n.hidden mem_text_start\n"
        "mem_text_start:\n.incbin \"" TEXT_BLOB "\"\n"
        ".globl mem_text_end\n.hidden mem_text_end\n"
        "mem_text_end:\n"
        ".popsection\n");

extern const unsigned char mem_ro_start[] __attribute__((visibility("hidden")));
extern const unsigned char mem_ro_end[] __attribute__((visibility("hidden")));
extern const unsigned char mem_text_start[] __attribute__((visibility("hidden")));
extern const unsigned char mem_text_end[] __attribute__((visibility("hidden")));

/* Some real code that runs: 64 small functions called through a table. */
#define F(n)                                                                  \
    static __attribute__((noinline)) unsigned long f##n(unsigned long x)      \
    {                                                                         \
        return x * (2 * (n) + 1) + (n);                                       \
    }
#define F8(n) F(n##0) F(n##1) F(n##2) F(n##3) F(n##4) F(n##5) F(n##6) F(n##7)
F8(1) F8(2) F8(3) F8(4) F8(5) F8(6) F8(7) F8(8)
#define R8(n) f##n##0, f##n##1, f##n##2, f##n##3, f##n##4, f##n##5, f##n##6, f##n##7,
static unsigned long (*const funcs[])(unsigned long) = {
    R8(1) R8(2) R8(3) R8(4) R8(5) R8(6) R8(7) R8(8)};

/* Reads through a volatile pointer so the compiler cannot skip any byte. */
static unsigned long sum(const unsigned char *p, const unsigned char *end)
{
    const volatile unsigned char *v = p;
    unsigned long h = 1469598103934665603ul;
    for (size_t i = 0; v + i < end; i++)
        h = (h ^ v[i]) * 1099511628211ul;
    return h;
}

unsigned long TOUCH(void)
{
    unsigned long h = sum(mem_ro_start, mem_ro_end);
    h ^= sum(mem_text_start, mem_text_end) * 3;
    for (size_t i = 0; i < sizeof funcs / sizeof funcs[0]; i++)
        h = funcs[i](h);
    return h;
}
