"""Opening a file whose path someone else chose, where only a regular file may be read.

Paths in verdict rows, and the files beside a score output (its completion record, the decisions file
the record names), are for whoever can write those folders to choose: what is at the path is looked at
(``stat``) before it is opened, and anything but a regular file refused unopened (opening a device has
effects of its own: a tape rewinds, a watchdog arms, a terminal becomes the process's); what is opened
is opened without blocking (a FIFO put there between the look and the open blocked open() until a
writer came, forever) and looked at again.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

__all__ = ["not_a_file", "open_regular"]

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def not_a_file(mode: int, path: str | os.PathLike[str]) -> OSError:
    """Why what is at ``path`` (its ``st_mode``) is not read: a folder as open() says it, the rest
    named (none of them ENOENT: something is there, which may be a new scan's)."""
    if stat.S_ISDIR(mode):
        return IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    kind = next((name for test, name in _KINDS if test(mode)), f"of file type {stat.S_IFMT(mode):#o}")
    return OSError(errno.EINVAL, f"not a regular file: {kind}", str(path))


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` opened to be read (unbuffered, blocking once it is known to be a regular file).

    Raises:
        OSError: it cannot be opened (FileNotFoundError where nothing is there), or it is not a
            regular file (EINVAL, naming what it is; IsADirectoryError).
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise not_a_file(mode, path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise not_a_file(mode, path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb", buffering=0)
