"""Flag constants with the numbers Linux x86-64 uses (include/uapi/asm-generic/mman*.h).

PROT_*, MAP_*, MCL_*, MREMAP_*, MLOCK_* and MADV_* are what userspace passes; VM_* are the
kernel's vma->vm_flags bits (include/linux/mm.h), including VM_POPULATE (0x1000) from patch 9
of the mm_populate() series, which only the ``v3.9-rc1`` profile sets.
"""

from __future__ import annotations

import enum

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)
PMD_SHIFT = 21
PTRS_PER_PTE = 1 << (PMD_SHIFT - PAGE_SHIFT)  # 512 pages per page-table page
TASK_SIZE = 0x7FFFFFFFF000  # x86-64 4-level paging
DEFAULT_MAX_MAP_COUNT = 65530


def page_align(n: int) -> int:
    """PAGE_ALIGN(): round up to a page boundary."""
    return (n + PAGE_SIZE - 1) & PAGE_MASK


class Prot(enum.IntFlag):
    PROT_NONE = 0x0
    PROT_READ = 0x1
    PROT_WRITE = 0x2
    PROT_EXEC = 0x4
    PROT_GROWSDOWN = 0x01000000
    PROT_GROWSUP = 0x02000000


class Map(enum.IntFlag):
    MAP_SHARED = 0x01
    MAP_PRIVATE = 0x02
    MAP_SHARED_VALIDATE = 0x03
    MAP_TYPE = 0x0F
    MAP_FIXED = 0x10
    MAP_ANONYMOUS = 0x20
    MAP_GROWSDOWN = 0x0100
    MAP_DENYWRITE = 0x0800
    MAP_EXECUTABLE = 0x1000
    MAP_LOCKED = 0x2000
    MAP_NORESERVE = 0x4000
    MAP_POPULATE = 0x8000
    MAP_NONBLOCK = 0x10000
    MAP_STACK = 0x20000
    MAP_HUGETLB = 0x40000
    MAP_SYNC = 0x80000
    MAP_FIXED_NOREPLACE = 0x100000


class Mcl(enum.IntFlag):
    MCL_CURRENT = 1
    MCL_FUTURE = 2
    MCL_ONFAULT = 4


class Mremap(enum.IntFlag):
    MREMAP_MAYMOVE = 1
    MREMAP_FIXED = 2
    MREMAP_DONTUNMAP = 4


class Mlock(enum.IntFlag):
    MLOCK_ONFAULT = 0x01


class Madv(enum.IntEnum):
    MADV_NORMAL = 0
    MADV_RANDOM = 1
    MADV_SEQUENTIAL = 2
    MADV_WILLNEED = 3
    MADV_DONTNEED = 4
    MADV_FREE = 8
    MADV_POPULATE_READ = 22
    MADV_POPULATE_WRITE = 23


class VM(enum.IntFlag):
    """vma->vm_flags bits (include/linux/mm.h)."""

    VM_NONE = 0
    VM_READ = 0x00000001
    VM_WRITE = 0x00000002
    VM_EXEC = 0x00000004
    VM_SHARED = 0x00000008
    VM_MAYREAD = 0x00000010
    VM_MAYWRITE = 0x00000020
    VM_MAYEXEC = 0x00000040
    VM_MAYSHARE = 0x00000080
    VM_GROWSDOWN = 0x00000100
    VM_POPULATE = 0x00001000  # patch 9 (3.9-rc1 only); the bit was later reused
    VM_LOCKED = 0x00002000
    VM_IO = 0x00004000
    VM_NORESERVE = 0x00200000
    VM_NONLINEAR = 0x00800000  # remap_file_pages before 4.0
    VM_PFNMAP = 0x00000400
    VM_LOCKONFAULT = 0x100000000  # VM_HIGH_ARCH in 6.x; a 64-bit-only bit here


# Flat re-exports as plain ints (enum arithmetic is slow on hot paths), so that
# `from mmlab import MAP_POPULATE` reads like C. The enum classes above are for display.
PROT_NONE = int(Prot.PROT_NONE)
PROT_READ = int(Prot.PROT_READ)
PROT_WRITE = int(Prot.PROT_WRITE)
PROT_EXEC = int(Prot.PROT_EXEC)
MAP_SHARED = int(Map.MAP_SHARED)
MAP_PRIVATE = int(Map.MAP_PRIVATE)
MAP_SHARED_VALIDATE = int(Map.MAP_SHARED_VALIDATE)
MAP_FIXED = int(Map.MAP_FIXED)
MAP_ANONYMOUS = int(Map.MAP_ANONYMOUS)
MAP_ANON = int(Map.MAP_ANONYMOUS)
MAP_GROWSDOWN = int(Map.MAP_GROWSDOWN)
MAP_LOCKED = int(Map.MAP_LOCKED)
MAP_NORESERVE = int(Map.MAP_NORESERVE)
MAP_POPULATE = int(Map.MAP_POPULATE)
MAP_NONBLOCK = int(Map.MAP_NONBLOCK)
MAP_STACK = int(Map.MAP_STACK)
MAP_FIXED_NOREPLACE = int(Map.MAP_FIXED_NOREPLACE)
MCL_CURRENT = int(Mcl.MCL_CURRENT)
MCL_FUTURE = int(Mcl.MCL_FUTURE)
MCL_ONFAULT = int(Mcl.MCL_ONFAULT)
MREMAP_MAYMOVE = int(Mremap.MREMAP_MAYMOVE)
MREMAP_FIXED = int(Mremap.MREMAP_FIXED)
MREMAP_DONTUNMAP = int(Mremap.MREMAP_DONTUNMAP)
MLOCK_ONFAULT = int(Mlock.MLOCK_ONFAULT)
MADV_DONTNEED = int(Madv.MADV_DONTNEED)
MADV_WILLNEED = int(Madv.MADV_WILLNEED)
MADV_POPULATE_READ = int(Madv.MADV_POPULATE_READ)
MADV_POPULATE_WRITE = int(Madv.MADV_POPULATE_WRITE)
VM_READ = int(VM.VM_READ)
VM_WRITE = int(VM.VM_WRITE)
VM_EXEC = int(VM.VM_EXEC)
VM_SHARED = int(VM.VM_SHARED)
VM_GROWSDOWN = int(VM.VM_GROWSDOWN)
VM_POPULATE = int(VM.VM_POPULATE)
VM_LOCKED = int(VM.VM_LOCKED)
VM_IO = int(VM.VM_IO)
VM_PFNMAP = int(VM.VM_PFNMAP)
VM_NORESERVE = int(VM.VM_NORESERVE)
VM_NONLINEAR = int(VM.VM_NONLINEAR)
VM_LOCKONFAULT = int(VM.VM_LOCKONFAULT)
VM_MAYREAD = int(VM.VM_MAYREAD)
VM_MAYWRITE = int(VM.VM_MAYWRITE)
VM_MAYEXEC = int(VM.VM_MAYEXEC)
VM_MAYSHARE = int(VM.VM_MAYSHARE)
MAP_TYPE = int(Map.MAP_TYPE)
PROT_GROWSDOWN = int(Prot.PROT_GROWSDOWN)
PROT_GROWSUP = int(Prot.PROT_GROWSUP)
