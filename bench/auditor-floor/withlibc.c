/* The same auditor using one libc function, so the link keeps libc.so.6
 * as DT_NEEDED: ld.so then loads and initialises a second libc in the
 * auditor's namespace (as it does for libfmcache.so). */
#include <link.h>
#include <stdlib.h>
unsigned int la_version(unsigned int v) { return getenv("FMCACHE_NO_SUCH_VARIABLE") ? 0 : v; }
