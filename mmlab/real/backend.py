"""The real kernel behind the model's call surface: :class:`RealMM`, :class:`Region`, :class:`RealFile`.

``RealMM`` has the syscall methods of :class:`mmlab.mm.mm_struct.MM` (mmap, munmap, mprotect,
mremap, mlock, mlock2, munlock, mlockall, munlockall, madvise, mincore, touch, remap_file_pages)
with the same arguments and the same errors, but each one is the real system call of this
process (through :mod:`mmlab.real.libc`), and the views (maps, smaps, VmLck) are read from /proc.

Safety. The process running mmlab is also a Python interpreter whose memory must not be touched.
A RealMM therefore only acts inside the address ranges it owns: a :class:`Region` reserved as one
PROT_NONE mapping at a free address far below mmap_base (so that the interpreter's own mappings,
placed top-down from mmap_base, never land in its holes), plus mappings the kernel placed
elsewhere for it (an mmap whose hint was taken, an mremap that moved). Any call reaching outside
them raises :class:`OutsideRegion` before anything is done. Leaving a Region -- normally, on an
exception, or on Ctrl-C -- undoes every mlockall() and unmaps everything it owns.

``touch()`` is a real one-byte load or store (through libc, so the GIL is dropped while the fault
runs) when /proc/self/maps shows the access is allowed. An access the kernel would answer with a
signal is *not* attempted -- it would kill the interpreter -- and raises the model's SIGSEGV or
SIGBUS instead, decided by x86's rules (write needs PROT_WRITE; any of PROT_READ/WRITE allows a
read; an exec-only page is treated as unreadable, since protection keys may make it so).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import random
import threading
from typing import Optional, Union

from mmlab.errors import SIGBUS, SIGSEGV
from mmlab.flags import (MADV_GUARD_INSTALL, MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_NORESERVE, MAP_PRIVATE,
                         MREMAP_FIXED, PAGE_SIZE, PROT_NONE, page_align)
from mmlab.real.libc import Libc, libc
from mmlab.real.procfs import (MapsEntry, read_maps, read_pagemap_guard, read_smaps, read_vm_lck_kb)

__all__ = ["RealMM", "Region", "RealFile", "OutsideRegion", "REGION_BASES"]

# where regions are placed: 32 TiB and up, far below the top-down mmap area of a 47-bit process
REGION_BASES = (0x2000_0000_0000, 0x3000_0000_0000, 0x1000_0000_0000)


class OutsideRegion(RuntimeError):
    """A call would have touched memory that mmlab did not map; nothing was done."""


class RealFile:
    """A real file on disk for file-backed mappings; ``drop_cache()`` makes its page cache cold.

    The data is written (not a hole, not fallocated), so a fault really reads the disk, and
    fsync'ed, so POSIX_FADV_DONTNEED can drop the now-clean pages."""

    def __init__(self, path: str, size: int, mode: str = "rw") -> None:
        self.path = path
        self.name = os.path.basename(path)
        self.size = size
        chunk = b"\xa5" * (1 << 20)
        with open(path, "wb") as f:
            left = size
            while left > 0:
                f.write(chunk[:min(left, len(chunk))])
                left -= len(chunk)
            f.flush()
            os.fsync(f.fileno())
        flags = {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR}[mode]
        self.fd = os.open(path, flags)
        self.mode = mode

    def drop_cache(self) -> None:
        """posix_fadvise(POSIX_FADV_DONTNEED): the next access of every page reads the disk."""
        os.fsync(self.fd) if self.mode != "r" else None
        libc().fadvise_dontneed(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "RealFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RealMM:
    """The real kernel's mm of this process, confined to the ranges in ``owned``."""

    def __init__(self, lib: Optional[Libc] = None) -> None:
        self.lib = lib or libc()
        self.owned: list[list[int]] = []  # [start, end) ranges this object may act on
        self.mlockall_used = False
        self.guards_installed = False
        self._lock = threading.Lock()
        self.kernel_release = os.uname().release

    # ------------------------------------------------------------------ ownership
    def own(self, start: int, end: int) -> None:
        with self._lock:
            self.owned.append([start, end])

    def disown(self, start: int, end: int) -> None:
        with self._lock:
            self.owned = [r for r in self.owned if not (start <= r[0] and r[1] <= end)]

    def owns(self, start: int, end: int) -> bool:
        with self._lock:
            return any(s <= start and end <= e for s, e in self.owned)

    def _check(self, start: int, length: int, what: str) -> None:
        """Refuse a call whose range is not inside owned memory. Ranges the kernel rejects
        anyway (zero length, unaligned, absurd) pass, so the kernel gives its own errno."""
        n = page_align(length + (start & (PAGE_SIZE - 1))) if length > 0 else 0
        s = start & ~(PAGE_SIZE - 1)
        if n <= 0 or length < 0 or length >= 1 << 47 or start >= 1 << 47:
            return
        if not self.owns(s, s + n):
            raise OutsideRegion(f"{what}({start:#x}, {length:#x}) reaches outside the memory mmlab owns")

    # ------------------------------------------------------------------ syscalls
    def mmap(self, addr: int, length: int, prot: int, flags: int,
             file: Union["RealFile", int, None] = None, offset: int = 0) -> int:
        if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
            self._check(addr, length, "mmap")
        fd = file.fd if isinstance(file, RealFile) else (-1 if file is None else int(file))
        r = self.lib.mmap(addr, length, prot, flags, fd, offset)
        if not self.owns(r, r + page_align(length)):
            self.own(r, r + page_align(length))  # placed outside: ours now, unmapped at the end
        return r

    def munmap(self, addr: int, length: int) -> int:
        self._check(addr, length, "munmap")
        r = self.lib.munmap(addr, length)
        self.disown(addr, addr + page_align(length))  # ranges placed outside and now gone
        return r

    def mprotect(self, addr: int, length: int, prot: int) -> int:
        self._check(addr, length, "mprotect")
        return self.lib.mprotect(addr, length, prot)

    def mremap(self, old_addr: int, old_len: int, new_len: int, flags: int = 0, new_addr: int = 0) -> int:
        self._check(old_addr, max(old_len, 1), "mremap")  # growth in place only takes free space
        if flags & MREMAP_FIXED:
            self._check(new_addr, new_len, "mremap")
        r = self.lib.mremap(old_addr, old_len, new_len, flags, new_addr)
        if not self.owns(r, r + page_align(new_len)):
            self.own(r, r + page_align(new_len))
        return r

    def mlock(self, addr: int, length: int) -> int:
        self._check(addr, length, "mlock")
        return self.lib.mlock(addr, length)

    def mlock2(self, addr: int, length: int, flags: int = 0) -> int:
        self._check(addr, length, "mlock2")
        return self.lib.mlock2(addr, length, flags)

    def munlock(self, addr: int, length: int) -> int:
        self._check(addr, length, "munlock")
        return self.lib.munlock(addr, length)

    def mlockall(self, flags: int) -> int:
        """mlockall() locks the whole interpreter too; leaving the Region undoes it."""
        self.mlockall_used = True
        return self.lib.mlockall(flags)

    def munlockall(self) -> int:
        return self.lib.munlockall()

    def madvise(self, addr: int, length: int, advice: int) -> int:
        self._check(addr, length, "madvise")
        if advice == MADV_GUARD_INSTALL:
            self.guards_installed = True  # from now on touch() asks pagemap first
        return self.lib.madvise(addr, length, advice)

    def mincore(self, addr: int, length: int) -> bytes:
        return self.lib.mincore(addr, length)

    def remap_file_pages(self, start: int, size: int, prot: int, pgoff: int, flags: int = 0) -> int:
        self._check(start, size, "remap_file_pages")
        return self.lib.remap_file_pages(start, size, prot, pgoff, flags)

    def touch(self, addr: int, write: bool = False) -> None:
        """A one-byte user load (or store) at *addr*, faulting the page in for real; accesses
        that would raise a signal raise the model's exception instead (see the module doc)."""
        self._check(addr, 1, "touch")
        page = addr & ~(PAGE_SIZE - 1)
        m = next((e for e in read_maps(page, page + PAGE_SIZE) if e.start <= addr < e.end), None)
        if m is None:
            raise SIGSEGV(addr, "no vma")
        r, w = m.perms[0] == "r", m.perms[1] == "w"
        if (write and not w) or (not write and not (r or w)):
            raise SIGSEGV(addr, f"{'write' if write else 'read'} access not allowed by {m.perms}")
        if self.guards_installed and read_pagemap_guard(page):  # the access would kill the interpreter
            raise SIGSEGV(addr, "guard marker")
        if m.name and not m.name.startswith("["):  # file-backed, shmem included: SIGBUS beyond EOF
            size = _mapped_file_size(m)
            if m.offset + (page - m.start) >= page_align(size):
                raise SIGBUS(addr, f"beyond EOF of {m.name}")
        if write:
            poke(addr)
        else:
            peek(addr)

    # ------------------------------------------------------------------ views
    def maps(self, lo: int, hi: int) -> list[MapsEntry]:
        return read_smaps(lo, hi)

    def maps_text(self, lo: int, hi: int) -> str:
        return "".join(f"{e.start:08x}-{e.end:08x} {e.perms} {e.offset:08x} {e.name}\n".replace(" \n", "\n")
                       for e in read_maps(lo, hi))

    def vm_lck_kb(self) -> int:
        return read_vm_lck_kb()

    # ------------------------------------------------------------------ undo
    def release_all(self) -> None:
        """munlockall() if mlockall() was used, then unmap every owned range."""
        if self.mlockall_used:
            try:
                self.lib.munlockall()
            finally:
                self.mlockall_used = False
        with self._lock:
            owned, self.owned = self.owned, []
        for s, e in owned:
            try:
                self.lib.munmap(s, e - s)
            except OSError:
                pass


def _mapped_file_size(m: MapsEntry) -> int:
    """The size of the file (or shmem object: a grown MAP_SHARED|MAP_ANONYMOUS mapping reaches
    beyond it) behind a vma, through /proc/self/map_files; refuses to guess."""
    try:
        return os.stat(f"/proc/self/map_files/{m.start:x}-{m.end:x}").st_size
    except OSError as e:
        raise OutsideRegion(f"cannot tell the size of {m.name} (so whether a touch would SIGBUS): {e}") from None


# one-byte loads and stores through libc: CDLL drops the GIL while the fault runs
_memset = ctypes.CDLL(None).memset if os.name == "posix" else None
_memcpy = ctypes.CDLL(None).memcpy if os.name == "posix" else None
if _memset is not None:
    _memset.restype = ctypes.c_void_p
    _memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    _memcpy.restype = ctypes.c_void_p
    _memcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
_sink = ctypes.create_string_buffer(8)


def poke(addr: int, value: int = 1) -> None:
    """Store one byte at *addr* (a write fault if the page is not there or not yet written)."""
    _memset(addr, value, 1)


def peek(addr: int) -> None:
    """Load one byte from *addr* (a read fault if the page is not there)."""
    _memcpy(_sink, addr, 1)


class Region:
    """A reserved PROT_NONE region of *size* bytes, owned by a fresh :class:`RealMM`.

    ``with Region(1 << 20) as reg:`` gives ``reg.mm`` (the RealMM), ``reg.base`` and ``reg.end``.
    Leaving the block undoes everything: munlockall() if mlockall() was used, munmap of the
    region and of anything the kernel placed elsewhere for it -- also on an exception or Ctrl-C.
    ``keep_reserved=False`` unmaps the inside after reserving, leaving holes (and a one-page
    PROT_NONE guard at each end, so nothing outside ever merges with what is mapped inside).
    """

    def __init__(self, size: int, keep_reserved: bool = True, guard: int = PAGE_SIZE,
                 seed: Optional[int] = None, mm: Optional[RealMM] = None) -> None:
        self.size = page_align(size)
        self.guard = guard
        self.keep_reserved = keep_reserved
        self.shared_mm = mm is not None
        self.mm = mm or RealMM()
        self._rng = random.Random(seed)
        self.base = self.end = 0

    def __enter__(self) -> "Region":
        lib = self.mm.lib
        total = self.size + 2 * self.guard
        flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE
        last: Optional[OSError] = None
        for top in REGION_BASES:
            hint = top + (self._rng.randrange(1 << 16) << 21)  # 2 MiB-aligned, spread over 128 GiB
            try:
                got = lib.mmap(hint, total, PROT_NONE, flags)
            except OSError as e:
                last = e
                continue
            if got != hint:  # an old kernel took NOREPLACE as a hint
                lib.munmap(got, total)
                continue
            break
        else:
            raise OSError(last.errno if last else 12, f"no free place for a {total:#x}-byte region")
        self.mm.own(got, got + total)
        _live.add(self)
        self.base = got + self.guard
        self.end = self.base + self.size
        if not self.keep_reserved:
            lib.munmap(self.base, self.size)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self.shared_mm:
            self.mm.release_all()
        elif self.base:  # a RealMM shared with other regions: undo only this one
            lo, hi = self.base - self.guard, self.end + self.guard
            self.mm.disown(lo, hi)
            self.mm.lib.munmap(lo, hi - lo)
        _live.discard(self)


_live: set[Region] = set()


@atexit.register
def _release_leftovers() -> None:  # a backstop: regions left open when the interpreter exits
    for r in list(_live):
        r.close()
