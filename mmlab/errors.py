"""Errors as Linux reports them: OSError with an errno for syscalls, signals for bad accesses."""

from __future__ import annotations

import errno
import os

__all__ = ["err", "Signal", "SIGSEGV", "SIGBUS"]


def err(code: int, what: str = "") -> OSError:
    """OSError(code, strerror) like the os module raises; *what* names the call."""
    e = OSError(code, os.strerror(code))
    if what:
        e.filename = what
    return e


class Signal(Exception):
    """A user access the kernel answers with a signal instead of a return value."""

    signo = 0
    name = ""

    def __init__(self, addr: int, why: str) -> None:
        super().__init__(f"{self.name} at {addr:#x}: {why}")
        self.addr = addr
        self.why = why


class SIGSEGV(Signal):
    signo = 11
    name = "SIGSEGV"


class SIGBUS(Signal):
    signo = 7
    name = "SIGBUS"


EINVAL, ENOMEM, EAGAIN, EPERM, EEXIST, EFAULT, EACCES, EBADF, EBUSY, EOVERFLOW = (
    errno.EINVAL, errno.ENOMEM, errno.EAGAIN, errno.EPERM, errno.EEXIST, errno.EFAULT,
    errno.EACCES, errno.EBADF, errno.EBUSY, errno.EOVERFLOW,
)
