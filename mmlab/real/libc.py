"""The system calls of the real kernel, through ctypes on libc.

Every function is bound through :class:`ctypes.CDLL` (not ``PyDLL``), so the interpreter drops
the GIL for the duration of the call: a thread inside ``mmap(MAP_POPULATE)`` really is inside the
kernel while the other task threads run Python. ``use_errno=True`` keeps errno per thread, and a
failing call raises ``OSError(errno)`` exactly as the ``os`` module does -- the same errors the
model raises.

Calls without a glibc wrapper we can rely on (``mlock2``, ``remap_file_pages``) go through
``syscall(2)`` with the number of this architecture. :func:`available` says whether any of this
can work here, and if not, why.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from typing import Optional

__all__ = ["available", "unavailable_reason", "SYSCALLS", "Libc", "libc", "MAP_FAILED"]

# syscall numbers of the calls we issue through syscall(2), per machine (uname -m)
SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {"mlock2": 325, "remap_file_pages": 216, "mremap": 25},
    "aarch64": {"mlock2": 284, "remap_file_pages": 234, "mremap": 216},
}
MAP_FAILED = (1 << (8 * ctypes.sizeof(ctypes.c_void_p))) - 1
POSIX_FADV_DONTNEED = 4  # 6 on s390x only, which is not a supported machine here

_reason: Optional[str] = None
_checked = False


def unavailable_reason() -> Optional[str]:
    """None when the real backend works here, else a sentence saying why it does not."""
    global _reason, _checked
    if _checked:
        return _reason
    _checked = True
    if not sys.platform.startswith("linux"):
        _reason = f"the real-kernel backend needs Linux (this is {sys.platform})"
    elif platform.machine() not in SYSCALLS:
        _reason = (f"the real-kernel backend knows the syscall numbers of x86_64 and aarch64 only "
                   f"(this is {platform.machine()})")
    elif ctypes.sizeof(ctypes.c_void_p) != 8:
        _reason = "the real-kernel backend needs a 64-bit process"
    elif not os.path.exists("/proc/self/smaps"):
        _reason = "the real-kernel backend needs /proc/self/maps and /proc/self/smaps (is /proc mounted?)"
    else:
        try:
            Libc()
        except (OSError, AttributeError) as e:
            _reason = f"libc could not be loaded through ctypes: {e}"
    return _reason


def available() -> bool:
    return unavailable_reason() is None


class Libc:
    """Typed bindings of the calls mmlab makes. Methods raise OSError(errno) on failure."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("c") or "libc.so.6"
        lib = ctypes.CDLL(name, use_errno=True)
        self._lib = lib
        self.nr = SYSCALLS[platform.machine()]
        vp, sz, i, lng = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_long
        self._mmap = _fn(lib.mmap, vp, [vp, sz, i, i, i, ctypes.c_long])
        self._munmap = _fn(lib.munmap, i, [vp, sz])
        self._mprotect = _fn(lib.mprotect, i, [vp, sz, i])
        self._mlock = _fn(lib.mlock, i, [vp, sz])
        self._munlock = _fn(lib.munlock, i, [vp, sz])
        self._mlockall = _fn(lib.mlockall, i, [i])
        self._munlockall = _fn(lib.munlockall, i, [])
        self._madvise = _fn(lib.madvise, i, [vp, sz, i])
        self._mincore = _fn(lib.mincore, i, [vp, sz, ctypes.c_char_p])
        self._fadvise = _fn(lib.posix_fadvise, i, [i, ctypes.c_long, ctypes.c_long, i])
        # syscall(2) is variadic; every argument is passed as a long, which both ABIs put in
        # the same registers as a fixed argument
        self._syscall = _fn(lib.syscall, lng, [lng, lng, lng, lng, lng, lng, lng])

    # -- helpers
    @staticmethod
    def _check(ret: int, what: str) -> int:
        if ret == -1:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), what)
        return ret

    def _sys(self, name: str, *args: int) -> int:
        a = [int(x) for x in args] + [0] * (6 - len(args))
        return self._check(self._syscall(self.nr[name], *a), name)

    # -- mm calls, argument for argument as the model's
    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0) -> int:
        r = self._mmap(addr or None, length, prot, flags, fd, offset)
        if r is None:  # NULL: only possible with MAP_FIXED at 0, which mmap_min_addr forbids
            return 0
        if r == MAP_FAILED:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), "mmap")
        return int(r)

    def munmap(self, addr: int, length: int) -> int:
        return self._check(self._munmap(addr or None, length), "munmap")

    def mprotect(self, addr: int, length: int, prot: int) -> int:
        return self._check(self._mprotect(addr or None, length, prot), "mprotect")

    def mremap(self, old_addr: int, old_len: int, new_len: int, flags: int = 0, new_addr: int = 0) -> int:
        """mremap(2) is variadic in glibc (new_address only with MREMAP_FIXED); the raw syscall
        takes all five arguments."""
        r = self._syscall(self.nr["mremap"], old_addr, old_len, new_len, flags, new_addr, 0, 0)
        if r == -1:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), "mremap")
        return r & MAP_FAILED

    def mlock(self, addr: int, length: int) -> int:
        return self._check(self._mlock(addr or None, length), "mlock")

    def mlock2(self, addr: int, length: int, flags: int = 0) -> int:
        return self._sys("mlock2", addr, length, flags)

    def munlock(self, addr: int, length: int) -> int:
        return self._check(self._munlock(addr or None, length), "munlock")

    def mlockall(self, flags: int) -> int:
        return self._check(self._mlockall(flags), "mlockall")

    def munlockall(self) -> int:
        return self._check(self._munlockall(), "munlockall")

    def madvise(self, addr: int, length: int, advice: int) -> int:
        return self._check(self._madvise(addr or None, length, advice), "madvise")

    def mincore(self, addr: int, length: int) -> bytes:
        n = (length + 4095) >> 12
        buf = ctypes.create_string_buffer(max(n, 1))
        self._check(self._mincore(addr or None, length, buf), "mincore")
        return bytes(b & 1 for b in buf.raw[:n])

    def remap_file_pages(self, start: int, size: int, prot: int, pgoff: int, flags: int = 0) -> int:
        return self._sys("remap_file_pages", start, size, prot, pgoff, flags)

    def fadvise_dontneed(self, fd: int) -> None:
        """posix_fadvise(POSIX_FADV_DONTNEED) on the whole file: drop its clean page cache."""
        r = self._fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        if r:
            raise OSError(r, os.strerror(r), "posix_fadvise")


def _fn(f, restype, argtypes):  # type: ignore[no-untyped-def]
    f.restype = restype
    f.argtypes = argtypes
    return f


_libc: Optional[Libc] = None


def libc() -> Libc:
    """The process-wide bindings; raises RuntimeError with the reason where unavailable."""
    global _libc
    if _libc is None:
        why = unavailable_reason()
        if why:
            raise RuntimeError(why)
        _libc = Libc()
    return _libc
