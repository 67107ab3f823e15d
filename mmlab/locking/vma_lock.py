"""Per-VMA locks (v6.4, Suren Baghdasaryan): page faults without mmap_lock.

Models vma_start_read() / vma_end_read() / vma_start_write() / vma_end_write_all(). A vma is
write-locked while ``vma.vm_lock_seq == mm_lock_seq``: a task holding mmap_sem for write marks
every vma it modifies (vma_start_write, which waits for the vma's readers to drain), and all of
them are unlocked at once when mmap_write_unlock() bumps ``mm_lock_seq``. A fault first tries
vma_start_read() (a trylock that fails on a write-locked vma) and falls back to mmap_sem on
failure. Only profiles with ``per_vma_lock`` use it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from mmlab.clock import hooks

if TYPE_CHECKING:
    from mmlab.mm.vma import Vma

__all__ = ["VmaLocks"]


class VmaLocks:
    def __init__(self) -> None:
        self.mm_lock_seq = 0
        # taken as the plain lock (``with self._lock``): Condition.__enter__/__exit__ are Python
        # frames around the same lock; wait() and notify_all() need only that it is held
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.read_fails = 0

    def start_read(self, vma: "Vma") -> bool:
        """vma_start_read(): a read lock on one vma, or False if it is (being) modified."""
        with self._lock:
            if vma.vm_lock_seq == self.mm_lock_seq or vma.detached:
                self.read_fails += 1
                return False
            vma.vm_refcnt += 1
            return True

    def end_read(self, vma: "Vma") -> None:
        with self._lock:
            vma.vm_refcnt -= 1
            if vma.vm_refcnt == 0:
                self._cond.notify_all()

    def start_write(self, vma: "Vma") -> None:
        """vma_start_write(): called with mmap_sem held for write; waits for the vma's readers."""
        if vma.vm_lock_seq == self.mm_lock_seq:
            return
        while True:
            with self._lock:
                if not vma.vm_refcnt:
                    vma.vm_lock_seq = self.mm_lock_seq
                    return
                hp = hooks.schedule_point
                if hp is None:
                    self._cond.wait(0.05)
                    continue
            hp("vma_write_wait", vma)  # controlled mode: not holding _cond, runs again once drained

    def end_write_all(self) -> None:
        """vma_end_write_all(): called by mmap_write_unlock() and mmap_write_downgrade()."""
        self.mm_lock_seq += 1
