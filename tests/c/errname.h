/* The one errno table of the C probes: a probe prints "ERR <name>" so that
 * a test compares native, recorded and served runs by name, and a number
 * only for an errno missing here. */
#ifndef FMCACHE_ERRNAME_H
#define FMCACHE_ERRNAME_H

#include <errno.h>
#include <stddef.h>

static const struct {
	int num;
	const char *name;
} errnames[] = {
	{ENOENT, "ENOENT"}, {ENOTDIR, "ENOTDIR"}, {EACCES, "EACCES"},
	{ELOOP, "ELOOP"}, {ENAMETOOLONG, "ENAMETOOLONG"}, {EFAULT, "EFAULT"},
	{EISDIR, "EISDIR"}, {EEXIST, "EEXIST"}, {EINVAL, "EINVAL"},
	{EBADF, "EBADF"}, {EPERM, "EPERM"}, {EROFS, "EROFS"},
	{ERANGE, "ERANGE"}, {ENXIO, "ENXIO"}, {ENODEV, "ENODEV"},
	{ETXTBSY, "ETXTBSY"}, {EOVERFLOW, "EOVERFLOW"}, {ENOTEMPTY, "ENOTEMPTY"},
	{EMFILE, "EMFILE"}, {ENFILE, "ENFILE"}, {ENOMEM, "ENOMEM"},
	{ENOSPC, "ENOSPC"}, {ESPIPE, "ESPIPE"}, {EXDEV, "EXDEV"},
	{EBUSY, "EBUSY"}, {ENOSYS, "ENOSYS"}, {EAGAIN, "EAGAIN"},
	{EOPNOTSUPP, "EOPNOTSUPP"}, {EIO, "EIO"}, {EINTR, "EINTR"},
	{ESTALE, "ESTALE"}, {ENODATA, "ENODATA"}, {ENOEXEC, "ENOEXEC"},
	{E2BIG, "E2BIG"},
};

/* The name of e, or NULL. */
static inline const char *errname(int e)
{
	for (size_t i = 0; i < sizeof errnames / sizeof errnames[0]; i++)
		if (errnames[i].num == e)
			return errnames[i].name;
	return NULL;
}

#endif
