"""Victims: the other threads of the process, whose latency a populate must not ruin.

* ``fault`` -- a reader: a task that only writes to fresh pages of a vma of its own (a page
  fault each: handle_mm_fault() under mmap_sem read, or under the per-VMA lock where the profile
  has ``per_vma_lock``), recycling the vma with MADV_DONTNEED (untimed) when it is used up. The
  vma has PROT_NONE guard pages on both sides so it never merges with a neighbour.
* ``writer`` -- a task that maps one page, mprotects it and unmaps it again: three calls that
  each take mmap_sem for write (vm_mmap_pgoff, do_mprotect_pkey, __vm_munmap).
* ``vma-writer`` -- a task that mprotects the last page of the populate's own range to PROT_NONE
  and back: write-lock calls that split and merge the populated vma (vma_start_write() on it),
  the writer that a populate under the per-VMA lock (``populate_vma_lock``) still makes wait.

They are separate threads on purpose: with a fair rwsem a queued writer blocks new readers, so
when the writer waits behind a long read hold, the reader waits behind the writer -- Michel
Lespinasse's objection to populating under the read lock. The model shows that convoy only if the
two are different tasks.

Both run as repeating tasks and set ``task.user["ready"]`` after a few steps, so a populator can
start once they are in full swing.
"""

from __future__ import annotations

import importlib.util
import random
import threading
from typing import Callable, Iterator

from mmlab.flags import (MADV_DONTNEED, MAP_ANONYMOUS, MAP_FIXED, MAP_NORESERVE, MAP_PRIVATE, PAGE_SIZE,
                         PROT_NONE, PROT_READ, PROT_WRITE, VM_READ, VM_WRITE)
from mmlab.harness.tasks import Step, Task

__all__ = ["VICTIMS", "make_victims", "parse_victims", "fault_victim", "writer_victim", "vma_writer_victim", "has_mprotect",
           "READY_AFTER"]

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
READY_AFTER = 4  # steps before a victim says it is running


def has_mprotect() -> bool:
    """mprotect() is modelled by mmlab.mm.mprotect (written on another branch)."""
    return importlib.util.find_spec("mmlab.mm.mprotect") is not None


def fault_victim(name: str = "fault", region: int = 4 << 20, seed: int = 0,
                 interval_ns: int | None = None) -> Task:
    """A reader faulting fresh pages of its own guarded vma, in a seeded random order."""
    npages = region // PAGE_SIZE
    ready = threading.Event()

    def setup(task: Task) -> None:
        mm = task.mm
        base = mm.mmap(0, region + 2 * PAGE_SIZE, PROT_NONE, ANON)
        a = mm.mmap(base + PAGE_SIZE, region, RW, ANON | MAP_FIXED)
        # Under mlockall(MCL_FUTURE) the region was locked and populated: make faults real again.
        mm.munlock(base, region + 2 * PAGE_SIZE)
        mm.madvise(a, region, MADV_DONTNEED)
        task.user.update(base=base, addr=a, ready=ready)

    def teardown(task: Task) -> None:
        if "base" in task.user:
            task.mm.munmap(task.user["base"], region + 2 * PAGE_SIZE)  # type: ignore[arg-type]

    rng = random.Random(seed)

    def script(task: Task) -> Iterator[Step]:
        a: int = task.user["addr"]  # type: ignore[assignment]
        order = list(range(npages))
        rng.shuffle(order)
        for i, p in enumerate(order):
            addr = a + p * PAGE_SIZE
            yield Step("fault", lambda mm, addr=addr: mm.touch(addr, write=True))
            if i == READY_AFTER:
                ready.set()
        yield Step("recycle", lambda mm: mm.madvise(a, region, MADV_DONTNEED), timed=False)

    return Task(name, script, repeat=True, interval_ns=interval_ns, setup=setup, teardown=teardown)


def writer_victim(name: str = "writer", interval_ns: int | None = None, mprotect: bool | None = None) -> Task:
    """One-page mmap, mprotect, munmap: three write-lock calls per round."""
    use_mprotect = has_mprotect() if mprotect is None else mprotect
    ready = threading.Event()

    def setup(task: Task) -> None:
        task.user["ready"] = ready

    def script(task: Task) -> Iterator[Step]:
        box: dict[str, int] = {}
        n = 0
        while True:
            yield Step("mmap", lambda mm: box.__setitem__("a", mm.mmap(0, PAGE_SIZE, RW, ANON | MAP_NORESERVE)))
            if use_mprotect:
                yield Step("mprotect", lambda mm: mm.mprotect(box["a"], PAGE_SIZE, PROT_READ))
            yield Step("munmap", lambda mm: mm.munmap(box["a"], PAGE_SIZE))
            n += 1
            if n == READY_AFTER:
                ready.set()

    return Task(name, script, repeat=True, interval_ns=interval_ns, setup=setup)


def vma_writer_victim(name: str = "vma-writer", interval_ns: int | None = None) -> Task:
    """While a populate runs (a call of another task with ``populate_range``, set by gup.py),
    mprotect() the last page of its range to PROT_NONE and back to the protection it had: two
    write-lock calls per round (op ``vma-mprotect``) that split the populated vma and merge it
    again -- do_mprotect_pkey() takes mmap_sem for write and vma_start_write() on the vma, which
    waits for a populate holding it under the per-VMA lock (bounded's ``populate_vma_lock``):
    the writer whose range does overlap the populate. While nothing populates it idles (an
    untimed step), so every timed call is one against a populate in progress."""
    ready = threading.Event()
    box: dict[str, int] = {}

    def setup(task: Task) -> None:
        task.user["ready"] = ready

    def to_none(mm) -> None:  # type: ignore[no-untyped-def]
        page = box["page"]
        v = mm.vmas.vma_lookup(page)
        box["prot"] = -1 if v is None else \
            (PROT_READ if v.flags & VM_READ else 0) | (PROT_WRITE if v.flags & VM_WRITE else 0)
        mm.mprotect(page, PAGE_SIZE, PROT_NONE)

    def back(mm) -> None:  # type: ignore[no-untyped-def]
        mm.mprotect(box["page"], PAGE_SIZE, box["prot"])

    def script(task: Task) -> Iterator[Step]:
        n = 0
        mm = task.mm
        while True:
            n += 1
            if n == READY_AFTER:
                ready.set()
            rng = next((getattr(c, "populate_range", None) for c in list(mm.running.values())
                        if c.populates and c.task != task.name), None)
            if rng is None:
                yield Step("idle", lambda mm_: mm_.clock.wait(50_000), timed=False)  # 50 us: no busy loop
                continue
            box["page"] = rng[1] - PAGE_SIZE
            # ENOMEM: the populate ended and its range went meanwhile (Linux's answer too); the
            # call took mmap_sem for write all the same, and counts as an error of the op
            yield Step("vma-mprotect", to_none, expect=(OSError,))
            if box.get("prot", -1) >= 0:
                yield Step("vma-mprotect", back, expect=(OSError,))

    return Task(name, script, repeat=True, interval_ns=interval_ns, setup=setup)


VICTIMS: dict[str, Callable[..., Task]] = {"fault": fault_victim, "writer": writer_victim,
                                           "vma-writer": vma_writer_victim}


def parse_victims(text: str) -> tuple[str, ...]:
    """``--victims``: comma-separated names of VICTIMS; a ValueError names what is unknown."""
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in names if v not in VICTIMS]
    if not names or unknown:
        raise ValueError(f"--victims: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(VICTIMS)}")
    return names


def make_victims(names: list[str], seed: int, interval_ns: int | None = None) -> list[Task]:
    out = []
    for n in names:
        if n == "fault":
            out.append(fault_victim(seed=seed, interval_ns=interval_ns))
        elif n == "writer":
            out.append(writer_victim(interval_ns=interval_ns))
        elif n == "vma-writer":
            out.append(vma_writer_victim(interval_ns=interval_ns))
        else:
            raise ValueError(f"unknown victim {n!r}; known: {', '.join(VICTIMS)}")
    return out
