"""mmap_sem over readerwriterlock, recorded and observable; the per-VMA lock."""

from mmlab.locking.rwsem import LockRecord, MmapSem, READ, WRITE
from mmlab.locking.vma_lock import VmaLocks

__all__ = ["MmapSem", "LockRecord", "READ", "WRITE", "VmaLocks"]
