"""Error numbers the model returns, as the kernel defines them.

v6.1 include/uapi/asm-generic/errno-base.h, include/uapi/asm-generic/errno.h,
include/linux/errno.h (ENOTSUPP is kernel-internal).
"""

EPERM = 1
ENOENT = 2
EINTR = 4
EIO = 5
ENXIO = 6
EBADF = 9
EAGAIN = 11
ENOMEM = 12
EACCES = 13
EFAULT = 14
EBUSY = 16
EEXIST = 17
EINVAL = 22
ENOSPC = 28
EPIPE = 32
EMLINK = 31
ERANGE = 34
EOVERFLOW = 75
EOPNOTSUPP = 95
EHWPOISON = 133
ENOTSUPP = 524

NAMES: dict[int, str] = {
    value: name for name, value in dict(globals()).items() if name.isupper() and name[0] == "E"
}


def errname(err: int) -> str:
    """Render a negative kernel return value as '-EFAULT'; other values as numbers."""
    return f"-{NAMES[-err]}" if err < 0 and -err in NAMES else str(err)
