"""Populators: each a way the series names to populate an unbounded range.

A populator has three steps, run by the task that owns it:

* ``setup(mm, size)`` prepares what the populating call needs (a file with a cold page cache,
  mlockall(MCL_FUTURE), a small VM_LOCKED vma to grow, ...) and picks the target range, so that
  racers know where the populate will land before it starts;
* ``populate(mm, st)`` is the one populating syscall -- the call whose lock holds stall others;
* ``teardown(mm, st)`` undoes it all, so rounds can repeat on one MM.

The target address comes from a PROT_NONE probe mapping that is unmapped again, then passed to
the call as a hint (mmap without MAP_FIXED uses a free hint as is).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from mmlab.flags import (MAP_ANONYMOUS, MAP_LOCKED, MAP_POPULATE, MAP_PRIVATE, MAP_SHARED, MCL_CURRENT,
                         MCL_FUTURE, MREMAP_MAYMOVE, PAGE_SIZE, PROT_NONE, PROT_READ, PROT_WRITE)
from mmlab.mm.filemap import File
from mmlab.mm.mm_struct import MM

__all__ = ["Populator", "PopState", "POPULATORS", "get_populators"]

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


@dataclass
class PopState:
    """What setup() prepared: the target range [addr, addr+length) and anything to undo."""

    addr: int
    length: int
    file: Optional[File] = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Populator:
    name: str
    description: str
    setup: Callable[[MM, int], PopState]
    populate: Callable[[MM, PopState], None]
    teardown: Callable[[MM, PopState], None]
    file_backed: bool = False
    locked: bool = False  # the populated range ends up VM_LOCKED


def reserve(mm: MM, length: int, slack: int = 0) -> int:
    """A free address range of *length* (+ *slack* free bytes after it) for a hinted mmap."""
    a = mm.mmap(0, length + slack, PROT_NONE, ANON)
    mm.munmap(a, length + slack)
    return a


def _anon_setup(mm: MM, size: int) -> PopState:
    return PopState(reserve(mm, size), size)


def _unmap(mm: MM, st: PopState) -> None:
    mm.munmap(st.addr, st.length)


def _populate_anon(mm: MM, st: PopState) -> None:
    mm.mmap(st.addr, st.length, RW, ANON | MAP_POPULATE)


def _file_setup(mm: MM, size: int) -> PopState:
    f = File("populate.dat", size)  # a new file: nothing of it is in the page cache
    return PopState(reserve(mm, size), size, file=f)


def _populate_file(mm: MM, st: PopState) -> None:
    mm.mmap(st.addr, st.length, PROT_READ, MAP_SHARED | MAP_POPULATE, st.file)


def _populate_locked(mm: MM, st: PopState) -> None:
    mm.mmap(st.addr, st.length, RW, ANON | MAP_LOCKED)


def _mlockall_setup(mm: MM, size: int) -> PopState:
    st = PopState(reserve(mm, size), size)
    mm.mlockall(MCL_CURRENT | MCL_FUTURE)
    return st


def _populate_plain(mm: MM, st: PopState) -> None:
    mm.mmap(st.addr, st.length, RW, ANON)  # populated because MCL_FUTURE is in effect


def _mlockall_teardown(mm: MM, st: PopState) -> None:
    mm.munlockall()
    mm.munmap(st.addr, st.length)


def _brk_setup(mm: MM, size: int) -> PopState:
    base = mm.brk(0)
    mm.mlockall(MCL_FUTURE)
    return PopState((base + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1), size, extra={"base": base})


def _populate_brk(mm: MM, st: PopState) -> None:
    mm.brk(st.extra["base"] + st.length)


def _brk_teardown(mm: MM, st: PopState) -> None:
    mm.munlockall()
    mm.brk(st.extra["base"])


def _mremap_setup(mm: MM, size: int) -> PopState:
    a = reserve(mm, size)
    mm.mmap(a, PAGE_SIZE, RW, ANON | MAP_LOCKED)  # a one-page VM_LOCKED vma with room to grow
    return PopState(a, size)


def _populate_mremap(mm: MM, st: PopState) -> None:
    # Grows in place when the room after the vma is still free (the usual case); MREMAP_MAYMOVE
    # lets it move when another task mapped something there since setup. Either way the grown
    # tail is populated: in place by vma_to_resize/expand, moved by move_vma (patch 6).
    st.addr = mm.mremap(st.addr, PAGE_SIZE, st.length, MREMAP_MAYMOVE)


def _fremap_setup(mm: MM, size: int) -> PopState:
    # A tmpfs file, so that v3.x makes the vma truly nonlinear (on a regular file it emulates
    # with a linear vma, which v3.7 does not populate unless VM_LOCKED). The mapping shows the
    # file's second half; the remap makes it show the first half -- a real, nonlinear remap (a
    # remap to the offsets already mapped is a no-op in v3.7).
    f = File("remap.dat", 2 * size, tmpfs=True)
    a = reserve(mm, size)
    mm.mmap(a, size, RW, MAP_SHARED, f, size)  # not populated: remap_file_pages does it
    return PopState(a, size, file=f)


def _populate_fremap(mm: MM, st: PopState) -> None:
    mm.remap_file_pages(st.addr, st.length, 0, 0, 0)  # blocking: no MAP_NONBLOCK


POPULATORS: dict[str, Populator] = {p.name: p for p in (
    Populator("populate-anon", "mmap(MAP_POPULATE) of anonymous memory", _anon_setup, _populate_anon, _unmap),
    Populator("populate-file", "mmap(MAP_SHARED|MAP_POPULATE) of a file, cold page cache", _file_setup,
              _populate_file, _unmap, file_backed=True),
    Populator("map-locked", "mmap(MAP_LOCKED) of anonymous memory", _anon_setup, _populate_locked, _unmap,
              locked=True),
    Populator("mlockall", "mlockall(MCL_CURRENT|MCL_FUTURE), then a plain anonymous mmap", _mlockall_setup,
              _populate_plain, _mlockall_teardown, locked=True),
    Populator("brk", "brk() growth under mlockall(MCL_FUTURE)", _brk_setup, _populate_brk, _brk_teardown,
              locked=True),
    Populator("mremap-locked", "mremap() growth of a VM_LOCKED vma", _mremap_setup, _populate_mremap, _unmap,
              locked=True),
    Populator("remap-file-pages", "blocking remap_file_pages() over a shared file mapping, cold cache",
              _fremap_setup, _populate_fremap, _unmap, file_backed=True),
)}


def get_populators(spec: str) -> list[Populator]:
    """A comma-separated list of populator names; ``all`` (or empty) for every one."""
    if spec.strip() in ("", "all"):
        return list(POPULATORS.values())
    out = []
    for name in (s.strip() for s in spec.split(",") if s.strip()):
        if name not in POPULATORS:
            raise ValueError(f"unknown populator {name!r}; known: {', '.join(POPULATORS)}")
        out.append(POPULATORS[name])
    return out
