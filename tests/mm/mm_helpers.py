"""Small helpers shared by the tests of mmlab/mm (imported as a plain module: pytest puts this
directory on sys.path)."""

from __future__ import annotations

from typing import Callable

import pytest

from mmlab import MAP_ANONYMOUS, MAP_PRIVATE, MM, PAGE_SIZE, PROT_NONE, ZERO_COSTS, VmaInfo


def errno_of(fn: Callable[..., object], *args: object) -> int:
    """The errno of the OSError that fn(*args) must raise."""
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno  # type: ignore[return-value]


def nonroot(kernel: object, limit: int, **kw: object) -> MM:
    """A zero-cost process without CAP_IPC_LOCK and with RLIMIT_MEMLOCK *limit* bytes."""
    return MM(kernel, ZERO_COSTS, cap_ipc_lock=False, rlimit_memlock=limit, **kw)  # type: ignore[arg-type]


def vmas_in(mm: MM, start: int, end: int) -> list[VmaInfo]:
    """The vmas intersecting [start, end)."""
    return [v for v in mm.maps() if v.start < end and v.end > start]


def vma_at(mm: MM, addr: int) -> VmaInfo:
    return next(v for v in mm.maps() if v.start <= addr < v.end)


def free_range(mm: MM, length: int) -> int:
    """An address where *length* bytes are free (mapped and unmapped again)."""
    a = mm.mmap(0, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS)
    mm.munmap(a, length)
    return a


P = PAGE_SIZE
