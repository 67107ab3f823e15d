"""A tiny ctypes door to the real kernel's mmap/munmap, for side-by-side benchmarks.

Calls go through ``ctypes.CDLL`` so the GIL is dropped inside the kernel, as in the measurements
of research/real-kernel-6.18.md. Only what the benchmarks need; the full real-kernel backend is
mmlab/real.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Optional

__all__ = ["RealMM", "real_unavailable"]

_MAP_FAILED = ctypes.c_void_p(-1).value


def real_unavailable() -> str:
    """Why the real kernel cannot be called here, or "" when it can."""
    if not sys.platform.startswith("linux"):
        return f"real kernel backend needs Linux (this is {sys.platform})"
    try:
        RealMM()
    except OSError as e:
        return f"libc not loadable: {e}"
    return ""


class RealMM:
    """mmap/munmap of the calling process through libc."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._mmap = libc.mmap
        self._mmap.restype = ctypes.c_void_p
        self._mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                               ctypes.c_int, ctypes.c_long]
        self._munmap = libc.munmap
        self._munmap.restype = ctypes.c_int
        self._munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]

    @property
    def raw_mmap(self):  # type: ignore[no-untyped-def]
        """The ctypes function itself, for tight loops: (addr, len, prot, flags, fd, off) -> addr."""
        return self._mmap

    @property
    def raw_munmap(self):  # type: ignore[no-untyped-def]
        return self._munmap

    def mmap(self, length: int, prot: int, flags: int, addr: Optional[int] = None) -> int:
        a = self._mmap(addr, length, prot, flags, -1, 0)
        if a is None or a == _MAP_FAILED:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return int(a)

    def munmap(self, addr: int, length: int) -> None:
        if self._munmap(addr, length) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
