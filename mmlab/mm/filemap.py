"""Files, the page cache, the disk and read-ahead; filemap_fault() with fault retry (mm/filemap.c).

A :class:`File` has a size, an open mode (what the fd allows), per-page contents and a page
cache. A fault on an uncached page reads a read-ahead window from the disk, which costs
``disk_window_ns``. Where the caller allows it (FAULT_FLAG_ALLOW_RETRY, i.e. ``unlock`` is given),
the wait happens with mmap_sem dropped, as lock_page_or_retry() / maybe_unlock_mmap_for_io() do,
and the fault reports "retry": __mm_populate() and the page-fault handler then take the lock
again and look the vma up again by address.
"""

from __future__ import annotations

import itertools
import threading
from typing import Callable, Optional

from mmlab.clock import Clock, Costs, hooks
from mmlab.flags import PAGE_SIZE

__all__ = ["File", "filemap_read"]

_inos = itertools.count(1)


class File:
    """A simulated file and its page cache. ``mode`` is what the fd was opened for: "r", "w", "rw".

    ``tmpfs``: a tmpfs/shmem file (/dev/shm). Its backing device does not account dirty pages
    (``mapping_cap_account_dirty()`` is false), which is what lets v3.x remap_file_pages() make
    its vmas truly VM_NONLINEAR; on a regular file v3.x emulates the remap with a linear vma.
    Its pages still come from ``disk`` when not cached (think: swapped out).

    ``holes``: a fresh shmem object (memfd_create() + ftruncate()) whose pages do not exist yet:
    shmem_fault() allocates just the faulting page, with no read-around and no disk wait.
    """

    def __init__(self, name: str, size: int, mode: str = "rw", cached: bool = False,
                 tmpfs: bool = False, holes: bool = False) -> None:
        if mode not in ("r", "w", "rw"):
            raise ValueError(f"file mode must be 'r', 'w' or 'rw', not {mode!r}")
        if size < 0:
            raise ValueError("file size must be >= 0")
        self.name = name
        self.tmpfs = tmpfs or holes
        self.holes = holes
        self.ino = next(_inos)
        self.mode = mode
        self._size = size
        self.cache = bytearray(b"\x01" if cached else b"\x00") * self.npages
        self.data: dict[int, int] = {}  # pgoff -> value written through a shared mapping
        self.io_lock = threading.Lock()  # the page lock held while a read is in flight
        self.disk_reads = 0

    @property
    def readable(self) -> bool:
        return "r" in self.mode

    @property
    def writable(self) -> bool:
        return "w" in self.mode

    @property
    def account_dirty(self) -> bool:
        """mapping_cap_account_dirty(): true for a regular file, false for tmpfs."""
        return not self.tmpfs

    @property
    def size(self) -> int:
        return self._size

    @property
    def npages(self) -> int:
        return (self._size + PAGE_SIZE - 1) // PAGE_SIZE

    def truncate(self, size: int) -> None:
        old = self.npages
        self._size = size
        n = self.npages
        if n > old:
            self.cache += bytes(n - old)
        else:
            del self.cache[n:]
            for p in [p for p in self.data if p >= n]:
                del self.data[p]

    def drop_caches(self) -> None:
        """posix_fadvise(POSIX_FADV_DONTNEED): the next access reads from disk again."""
        self.cache[:] = bytes(len(self.cache))

    def cached_pages(self) -> int:
        return self.npages - self.cache.count(0)

    def __repr__(self) -> str:
        return f"{self.name}"


def filemap_read(file: File, pgoff: int, costs: Costs, clock: Clock,
                 unlock: Optional[Callable[[], None]] = None) -> bool:
    """Bring file page *pgoff* into the page cache (page_cache_sync_readahead() + wait).

    Returns False if the page was already cached. Otherwise reads a window from the disk: the
    mmap read-around of do_sync_mmap_readahead() starts ``readahead_pages / 2`` before *pgoff*
    (``ra->start = index - ra_pages / 2``), and the window reaches ``readahead_pages`` past
    *pgoff* (the asynchronous read-ahead that PG_readahead starts is folded into the same read).
    With *unlock* given, calls it first (the mmap_sem is dropped for the wait) and returns True:
    the caller must report VM_FAULT_RETRY. A hole of a ``holes`` shmem object is allocated on the
    spot (shmem_fault()): that page only, no wait.
    """
    if file.cache[pgoff]:
        return False
    if file.holes:
        file.cache[pgoff] = 1
        return False
    if unlock is not None:
        unlock()
    hp = hooks.schedule_point
    if hp is not None:  # lock_page(): controlled mode runs the task only once the page lock is free
        hp("page_lock", file.io_lock)
    with file.io_lock:  # another task may have read it while we waited for the page lock
        if not file.cache[pgoff]:
            start = max(0, pgoff - costs.readahead_pages // 2)
            end = min(file.npages, pgoff + costs.readahead_pages)
            clock.wait(costs.cost("disk_window"), "disk")
            file.cache[start:end] = b"\x01" * (end - start)
            file.disk_reads += 1
    return unlock is not None
