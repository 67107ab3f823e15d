"""The documented differences between the model and the real kernel: the one place they live.

`mmlab diff` compares the model with the real kernel after every call. Where they differ on
purpose, the difference is listed here with its reason, and it is excused only when its own
check shows that it, and nothing else, explains what was seen:

* an *observation* difference (``explains_obs``) says why one observed field differs, and checks
  every differing page or vma against that reason;
* a *state* difference (``model_action``) gives what the model would have to do to behave like
  Linux for that call; the diff replays the case on a fresh model with that action instead, and
  the difference is excused only if that model then agrees with the real kernel on everything.

Each is counted by name in the report, never skipped silently, and each has a test in
tests/real/test_known.py that shows the real kernel really behaves so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from mmlab.errors import EINVAL, ENOMEM
from mmlab.flags import (MADV_DONTNEED, MADV_POPULATE_READ, MADV_POPULATE_WRITE, MLOCK_ONFAULT, PAGE_SIZE,
                         TASK_SIZE, VM_EXEC, VM_LOCKED, VM_PFNMAP, VM_READ, VM_WRITE)

if TYPE_CHECKING:
    from mmlab.real.diff import ModelSide, Obs, Op

__all__ = ["KnownDifference", "KNOWN", "by_name"]

P = PAGE_SIZE


@dataclass(frozen=True)
class KnownDifference:
    name: str
    short: str
    reason: str
    explains_obs: Optional[Callable[[str, "Op", "Obs", "Obs"], bool]] = None
    model_action: Optional[Callable[["Op", "ModelSide", tuple, tuple], Optional[Callable[["ModelSide"], tuple]]]] = None


# --------------------------------------------------------------------------- partial application
def _first_hole(side: "ModelSide", start: int, end: int) -> int:
    """The end of the mapped prefix of [start, end) in the model: the first unmapped address."""
    pos = start
    for v in side.mm.vmas.range(start, end):
        if v.start > pos:
            return pos
        pos = v.end
    return min(pos, end)


def _span_of(o: "Op", base: int) -> tuple[int, int]:
    a = dict(o.args)
    start = base + a["off"]
    length = a["len"]
    if o.name in ("mlock", "mlock2", "munlock"):  # these round the start down (do_mlock)
        length += start & (P - 1)
        start &= ~(P - 1)
    return start, start + ((length + P - 1) & ~(P - 1))


def _partial_apply(o: "Op", side: "ModelSide", real_r: tuple, model_r: tuple):  # type: ignore[no-untyped-def]
    """mprotect/mlock/mlock2/munlock over a range with a hole: Linux changes the vmas before the
    hole, then fails with ENOMEM; the model (a failing call changes nothing) does not."""
    if o.name not in ("mprotect", "mlock", "mlock2", "munlock"):
        return None
    if real_r != ("errno", ENOMEM) or model_r != ("errno", ENOMEM):
        return None
    start, end = _span_of(o, side.base)
    if start & (P - 1) or end > TASK_SIZE:
        return None
    hole = _first_hole(side, start, end)
    if hole <= start or hole >= end:
        return None  # nothing mapped at start (Linux changes nothing too) or no hole at all

    def act(s: "ModelSide") -> tuple:
        n = hole - start
        if o.name == "mprotect":
            s.mm.mprotect(start, n, o.arg("prot"))
        elif o.name == "munlock":
            s.mm.munlock(start, n)
        else:
            # do_mlock(): apply_vma_lock_flags() failed, so __mm_populate() never ran: the
            # prefix is VM_LOCKED but not populated -- lock the flags only
            from mmlab.mm.mlock import _apply_lock_flags, _lock_bits
            onfault = o.name == "mlock2" and bool(o.arg("flags") & MLOCK_ONFAULT)
            call = s.mm.begin_call(o.name, (start, n))
            s.mm.mmap_write_lock()
            try:
                _apply_lock_flags(s.mm, call, start, start + n, _lock_bits(s.mm, onfault))
            finally:
                s.mm.mmap_write_unlock()
            s.mm.end_call(call, 0)
        return ("errno", ENOMEM)
    return act


def _madvise_around_holes(o: "Op", side: "ModelSide", real_r: tuple, model_r: tuple):  # type: ignore[no-untyped-def]
    """madvise(MADV_DONTNEED) over a range with holes or a VM_LOCKED vma: Linux walks the vmas in
    order, zaps each mapped part, remembers ENOMEM for the holes and stops with EINVAL at a
    VM_LOCKED vma; the model checks the whole range first and changes nothing."""
    if o.name != "madvise" or real_r[0] != "errno" or real_r != model_r:
        return None
    base = side.base
    start = base + o.arg("off")
    end = start + ((o.arg("len") + P - 1) & ~(P - 1))
    if start & (P - 1) or end <= start:
        return None
    if o.arg("advice") in (MADV_POPULATE_READ, MADV_POPULATE_WRITE):
        return _populate_prefix(o, side, real_r, start, end)
    if o.arg("advice") != MADV_DONTNEED:
        return None
    vmas = side.mm.vmas.range(start, end)
    parts = []
    for v in vmas:
        if v.flags & (VM_LOCKED | VM_PFNMAP):
            break
        parts.append((max(start, v.start), min(end, v.end)))
    if not parts:
        return None

    def act(s: "ModelSide") -> tuple:
        from mmlab.mm.mmap import zap_detached
        from mmlab.mm.vma import Vma
        s.mm.mmap_read_lock()
        try:
            zap_detached(s.mm, [Vma(a, b, s.mm.vmas.vma_lookup(a).flags) for a, b in parts])
        finally:
            s.mm.mmap_read_unlock()
        return real_r
    return act


def _populate_prefix(o: "Op", side: "ModelSide", real_r: tuple, start: int, end: int):  # type: ignore[no-untyped-def]
    """MADV_POPULATE_READ/WRITE faults pages in address order and fails where it stops (a hole:
    ENOMEM; a vma it may not fault: EINVAL); the pages before that stay populated."""
    stop = start
    write = o.arg("advice") == MADV_POPULATE_WRITE
    for v in side.mm.vmas.range(start, end):
        ok = v.flags & (VM_READ | VM_WRITE | VM_EXEC) and (v.flags & VM_WRITE if write else v.flags & VM_READ)
        if v.start > stop or not ok:
            break
        stop = min(end, v.end)
    if stop <= start:
        return None

    def act(s: "ModelSide") -> tuple:
        s.mm.madvise(start, stop - start, o.arg("advice"))
        return real_r
    return act


# --------------------------------------------------------------------------- observations
def _shmem_mincore(field: str, o: "Op", real: "Obs", model: "Obs") -> bool:
    """mincore() of a MAP_SHARED|MAP_ANONYMOUS vma reports the shmem object's page cache, which
    keeps pages after MADV_DONTNEED zapped the ptes; the model has no page cache for anonymous
    shared memory and reports its ptes. Excused page by page: the vma is shared, real mincore
    says 1, the model 0, and the real pte (pagemap) is not present -- as the model says."""
    if field != "mincore" or real.layout != model.layout or real.pte is None:
        return False
    for (s, e, perms, *file), rm, mm_, pte in zip(real.layout, real.mincore, model.mincore, real.pte):
        if rm == mm_:
            continue
        if perms[3] != "s" or file:  # a memfd or disk file: the model has its page cache
            return False
        for r, m, p in zip(rm, mm_, pte):
            if r != m and not (r == 1 and m == 0 and p == 0):
                return False
    return True


def _file_fault_around(field: str, o: "Op", real: "Obs", model: "Obs") -> bool:
    """A read fault on a file mapping maps more than the faulting page: do_fault_around() maps
    the cached pages of the fault-around window (fault_around_bytes), and finish_fault() maps
    every page of a large folio that fits in the vma -- and which folio sizes ext4 read-ahead
    made is not something the model knows. So Linux may have more ptes present (and, in a
    VM_LOCKED vma, more Locked kB, since Locked counts the mapped pages) than the model.
    Excused page by page: the layouts agree, the vma maps a file, the page is in the page cache
    on both sides (mincore 1 on both: the model's page cache agrees), Linux has the pte and the
    model not; never the other way round. For ``locked``: per vma, the Locked kB the real side
    has more equals 4 kB times such pages, and the ``lo`` flags and the lo sum agree."""
    if field not in ("pte", "locked") or real.layout != model.layout or real.pte is None or model.pte is None:
        return False
    extra = []
    for (s, e, perms, *file), rm, mm_, rp, mp in zip(real.layout, real.mincore, model.mincore, real.pte, model.pte):
        n = 0
        for i, (r, m) in enumerate(zip(rp, mp)):
            if r == m:
                continue
            if not file or r != 1 or m != 0 or rm[i] != 1 or mm_[i] != 1:
                return False
            n += 1
        extra.append(n)
    if field == "pte":
        return any(extra)
    (rl, rsum), (ml, msum) = real.locked, model.locked
    if rsum != msum or len(rl) != len(ml):
        return False
    for (rk, rlo), (mk, mlo), n in zip(rl, ml, extra):
        if rlo != mlo or (rk != mk and not (rlo and rk - mk == 4 * n)):
            return False
    return any(extra)


KNOWN: list[KnownDifference] = [
    KnownDifference(
        "partial-apply-before-hole",
        "mprotect/mlock/munlock change the vmas before a hole, then ENOMEM",
        "mprotect(), mlock(), mlock2() and munlock() over a range with a hole: Linux changes the vmas "
        "before the hole and then fails with ENOMEM (and mlock does not populate them); the model "
        "follows the project's rule that a failing call leaves the model unchanged.",
        model_action=_partial_apply),
    KnownDifference(
        "madvise-applies-around-holes",
        "madvise applies to what it walks before failing",
        "madvise() over holes or vmas it refuses: Linux applies the advice to every part it walks "
        "before failing -- MADV_DONTNEED zaps the mapped parts (ENOMEM for holes at the end, EINVAL "
        "at the first VM_LOCKED vma), MADV_POPULATE_* faults pages in up to the first hole or "
        "incompatible vma; the model checks the whole range first and changes nothing on failure.",
        model_action=_madvise_around_holes),
    KnownDifference(
        "shmem-mincore-page-cache",
        "mincore of shared anon memory shows the shmem page cache",
        "mincore() on MAP_SHARED|MAP_ANONYMOUS memory reports the shmem page cache, which keeps pages "
        "that MADV_DONTNEED (or a partial munmap) took out of the page table; the model keeps no page "
        "cache for anonymous shared memory and reports its page table, as /proc/self/pagemap does.",
        explains_obs=_shmem_mincore),
    KnownDifference(
        "file-fault-around",
        "a read fault on a file mapping maps the cached pages around it",
        "A read fault on a file mapping maps more than the faulting page: do_fault_around() maps the "
        "cached pages of the fault_around_bytes window, and finish_fault() maps each page of a large "
        "folio that fits in the vma; the folio sizes come from ext4's read-ahead, which the model does "
        "not model. The model maps the faulting page; the page cache (mincore) agrees.",
        explains_obs=_file_fault_around),
]


def by_name(name: str) -> KnownDifference:
    for k in KNOWN:
        if k.name == name:
            return k
    raise KeyError(name)
