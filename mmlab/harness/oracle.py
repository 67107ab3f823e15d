"""The race oracle: grade every page a populate made present, jcstress-style.

The question is the one VM_POPULATE (patch 9 of the mm_populate() series) answered and its revert
reopened: once __mm_populate() runs after up_write() and re-takes mmap_sem after each disk wait,
it looks the vma up again *by address* -- and may fault in a mapping that replaced the range in
the meantime. The model records what is needed to tell: each pte carries the call that made it
present, whether a populate did it (PTE_POPULATE) and what the mapping there was to that call
*at that moment* (its grade bits, PTE_GRADE: mmlab.mm.gup.populate_marks(), from the call's
targets -- the mapping origins it asked to populate -- and the origin's "asked to populate" flag
then). The grade is fixed when the pte is made present and moves with it (move_page_tables());
nothing done to the mapping afterwards (mlock, mlockall + munlockall, mprotect, an mremap move,
MADV_POPULATE_*) changes how the page was populated. The OriginMap keeps the lineage of every
address range (split, merge, mprotect and mlock keep it; a new mmap or an mremap move-in
replaces it); the oracle checks it for the structural findings below.

Grades, per populated page:

* OK          -- populated into a mapping the call asked for (its origin, or one mremap moved
                 from it, among the call's targets) -- wherever the page has moved since;
* INTERESTING -- a replacement that itself had asked to be populated when it was populated
                 (MAP_POPULATE, MAP_LOCKED, mlock, MCL_FUTURE): what patch 9 accepted;
* FORBIDDEN   -- a replacement that had never asked ("replacement populated"), a page outside any
                 vma, or a page whose state the vma does not allow.

A populated page that was unmapped (or zapped) since is gone from the final state: only the live
checker (mmlab.harness.live) sees it.

Model invariants are FORBIDDEN too: MM.check_invariants(), a non-ONFAULT VM_LOCKED mapping not
fully present after its call returned (unless another call changed that range meanwhile), and a
mapping lost although no call unmapped or replaced it.

The oracle is a pure function of a :class:`Snapshot`: it never asks which kernel ran, so a
verdict moves only when the mechanism moves (flip ``vm_populate`` and FORBIDDEN comes back).
``capture(mm)`` must see a quiescent model: call it after the tasks are joined, or while holding
mmap_sem for write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Optional

from mmlab.flags import (PAGE_SIZE, TASK_SIZE, VM_EXEC, VM_LOCKED, VM_LOCKONFAULT, VM_MAYWRITE,
                         VM_READ, VM_WRITE)
from mmlab.mm.pagetable import (PTE_FILE, PTE_MLOCKED, PTE_POPULATE, PTE_PRESENT, PTE_REPLACEMENT,
                                PTE_REPLACEMENT_ASKED, PTE_WRITTEN, PageTable, PteTable)
from mmlab.mm.vma import vm_flags_str

if TYPE_CHECKING:
    from mmlab.mm.mm_struct import MM

__all__ = ["OK", "INTERESTING", "FORBIDDEN", "GRADES", "Snapshot", "CallView", "VmaView", "OriginView",
           "LockView", "Finding", "Verdict", "capture", "judge", "check", "page_grades", "format_history"]

OK = "OK"
INTERESTING = "INTERESTING"
FORBIDDEN = "FORBIDDEN"
GRADES = (OK, INTERESTING, FORBIDDEN)
_RANK = {OK: 0, INTERESTING: 1, FORBIDDEN: 2}

# calls that may change which mapping (or which protection) covers a range
_MAPPING_CALLS = frozenset({"mmap", "munmap", "mremap", "mprotect", "brk", "remap_file_pages",
                            "mlock", "mlock2", "munlock", "mlockall", "munlockall", "madvise"})
# calls after which a range may legitimately hold another mapping (or none)
_REPLACING_CALLS = frozenset({"mmap", "munmap", "mremap", "brk", "remap_file_pages"})


# ---------------------------------------------------------------------------- the snapshot
@dataclass(frozen=True)
class VmaView:
    start: int
    end: int
    flags: int
    vm_id: int
    file: Optional[str]
    pgoff: int
    file_pages: int  # pages of the file behind it (populate stops at EOF); 0 for anonymous

    @property
    def pages(self) -> int:
        return (self.end - self.start) >> 12

    def __repr__(self) -> str:
        f = f" {self.file}" if self.file else ""
        return f"vma#{self.vm_id} {self.start:#x}-{self.end:#x} {vm_flags_str(self.flags)}{f}"


@dataclass(frozen=True)
class OriginView:
    oid: int
    call_id: int
    kind: str
    asked_populate: bool
    task: str


@dataclass(frozen=True)
class CallView:
    call_id: int
    task: str
    name: str
    args: tuple
    targets: frozenset[int]
    populates: bool
    pages: int
    retakes: int
    io_waits: int
    t_start: int
    t_end: int  # -1 while the call runs
    result: object
    # pages it populated into mappings it had not asked for, with those mappings' origins as they
    # were then: (origin id, PTE grade bit, origin kind, origin call id, origin task, asked, pages)
    replaced: tuple = ()

    @property
    def failed(self) -> bool:
        return isinstance(self.result, BaseException)

    def describe(self) -> str:
        a = ", ".join(hex(x) if isinstance(x, int) and x > 4096 else repr(x) for x in self.args)
        r = self.result
        if isinstance(r, OSError):
            rs = f"-1 {r.strerror or r}"
        elif isinstance(r, BaseException):
            rs = f"raised {type(r).__name__}: {r}"
        elif isinstance(r, int) and r > 4096:
            rs = hex(r)
        else:
            rs = repr(r)
        return f"{self.name}({a}) = {rs}"


@dataclass(frozen=True)
class LockView:
    task: str
    mode: str
    call_id: int
    call: str
    how: str
    req_ns: int
    acq_ns: int
    rel_ns: int


@dataclass
class Snapshot:
    """Everything the oracle looks at, copied out of a quiescent MM."""

    vmas: list[VmaView]
    pt: PageTable
    origins: list[tuple[int, int, OriginView]]  # address order, non-overlapping
    calls: dict[int, CallView]  # call_id -> every call known: history plus populating calls
    history: list[CallView]  # finished calls in the order they finished
    locks: list[LockView]  # finished lock holds in the order they were released
    invariants: list[str]  # MM.check_invariants() at capture time
    start_brk: int = 0

    def vma_at(self, addr: int) -> Optional[VmaView]:
        import bisect
        i = bisect.bisect_right(self._starts(), addr) - 1
        if i >= 0 and self.vmas[i].end > addr:
            return self.vmas[i]
        return None

    def _starts(self) -> list[int]:
        s = getattr(self, "_starts_cache", None)
        if s is None:
            s = [v.start for v in self.vmas]
            self._starts_cache = s
        return s


def _clone_pt(pt: PageTable) -> PageTable:
    out = PageTable()
    for key, t in pt.pmds.items():
        c = PteTable()
        c.state[:] = t.state
        c.call[:] = t.call
        c.task[:] = t.task
        c.present = t.present
        out.pmds[key] = c
    out.nr_present = pt.nr_present
    return out


def _call_view(c) -> CallView:
    rep = c.replaced
    replaced = tuple((oid, mark, *r[:4], r[4]) for (oid, mark), r in list(rep.items())) if rep else ()
    return CallView(c.call_id, c.task, c.name, tuple(c.args), frozenset(c.targets), c.populates, c.pages,
                    c.retakes, c.io_waits, c.t_start, c.t_end, c.result, replaced)


def capture(mm: "MM", locks: bool = True) -> Snapshot:
    """Copy what the oracle needs out of *mm*. The model must be quiescent (every task joined,
    or the caller holds mmap_sem for write); *locks* copies the lock history too."""
    vmas = [VmaView(v.start, v.end, v.flags, v.vm_id, getattr(v.file, "name", None), v.pgoff,
                    getattr(v.file, "npages", 0)) for v in mm.vmas]
    origins = [(s, e, OriginView(o.oid, o.call_id, o.kind, o.asked_populate, o.task))
               for s, e, o in mm.origins.ranges(0, TASK_SIZE)]
    history = [_call_view(c) for c in list(mm.call_history)]
    calls = {c.call_id: c for c in history}
    for cid, c in list(mm.calls.items()):
        if cid not in calls:
            calls[cid] = _call_view(c)
    lock_views = [LockView(r.task, r.mode, r.call_id, r.call, r.how, r.req_ns, r.acq_ns, r.rel_ns)
                  for r in list(mm.mmap_sem.history)] if locks else []
    return Snapshot(vmas, _clone_pt(mm.pt), origins, calls, history, lock_views, mm.check_invariants(),
                    getattr(mm, "start_brk", 0))


# ---------------------------------------------------------------------------- the verdict
@dataclass
class Finding:
    """One graded fact: a run of pages (or an invariant) with the call and origin involved."""

    grade: str
    kind: str  # replacement-populated, replacement-asked, outside-vma, bad-state, no-call,
    #            invariant, locked-not-present, mapping-lost
    message: str
    start: int = 0
    end: int = 0
    call_id: int = 0
    oid: int = 0
    npages: Optional[int] = None  # pages concerned when not the whole [start, end)

    @property
    def pages(self) -> int:
        return self.npages if self.npages is not None else (self.end - self.start) >> 12

    def as_dict(self) -> dict[str, object]:
        return {"grade": self.grade, "kind": self.kind, "message": self.message, "start": self.start,
                "end": self.end, "pages": self.pages, "call_id": self.call_id, "origin": self.oid}


@dataclass
class Verdict:
    """The round's outcome: the worst grade found, page counts per grade, and the findings."""

    outcome: str = OK
    pages: dict[str, int] = field(default_factory=lambda: {g: 0 for g in GRADES})
    findings: list[Finding] = field(default_factory=list)
    snapshot: Optional[Snapshot] = None

    @property
    def wrong_pages(self) -> int:
        """Pages populated that no call asked for: the FORBIDDEN pages."""
        return self.pages[FORBIDDEN]

    def add(self, f: Finding, pages: int = 0) -> None:
        self.findings.append(f)
        if _RANK[f.grade] > _RANK[self.outcome]:
            self.outcome = f.grade

    def report(self, history: bool = True) -> str:
        lines = [f"outcome {self.outcome}: " + ", ".join(f"{g} {self.pages[g]} pages" for g in GRADES)]
        for f in self.findings:
            if f.grade != OK:
                lines.append(f"  {f.grade}: {f.message}")
        if history and self.snapshot is not None and self.outcome != OK:
            lines.append("  call history (start order; lock holds R/W with their ms, relative to the first call):")
            lines.extend("    " + s for s in format_history(self.snapshot))
        return "\n".join(lines)


def judge(snap: Snapshot) -> Verdict:
    """Grade every populated page of *snap* and check the invariants. Pure: reads only *snap*."""
    v = Verdict(snapshot=snap)
    _grade_populated(snap, v)
    for msg in snap.invariants:
        v.add(Finding(FORBIDDEN, "invariant", f"invariant broken: {msg}"))
    _check_locked_present(snap, v)
    _check_mappings_kept(snap, v)
    return v


def check(mm: "MM") -> Verdict:
    """judge(capture(mm)): the model must be quiescent."""
    return judge(capture(mm))


def page_grades(snap: Snapshot) -> Iterable[tuple[int, str, str, int, int, Optional[OriginView]]]:
    """(address, grade, kind, call id, pte state, origin there now) of every populated page of
    *snap*, in address order."""
    oi = 0
    origins = snap.origins
    for addr, state, _task, cid in _iter_populated(snap.pt):
        while oi < len(origins) and origins[oi][1] <= addr:
            oi += 1
        origin = origins[oi][2] if oi < len(origins) and origins[oi][0] <= addr else None
        grade, kind = _grade_page(snap, addr, state, cid, origin)
        yield addr, grade, kind, cid, state, origin


def _grade_populated(snap: Snapshot, v: Verdict) -> None:
    """Every PTE_POPULATE page: its grade bits (fixed when it was populated), and whether the
    vma and lineage around it now allow it to be there at all."""
    runs: dict[tuple[str, str, int, int], list[int]] = {}  # (grade, kind, call, oid) -> [start, end, ...]
    order: list[tuple[str, str, int, int]] = []
    for addr, grade, kind, cid, state, origin in page_grades(snap):
        # a replacement run is named by what its call recorded when it populated it; the others
        # by the lineage they are in now
        oid = _populated_oid(snap, cid, state) if kind.startswith("replacement") else (origin.oid if origin else 0)
        key = (grade, kind, cid, oid)
        v.pages[grade] += 1
        r = runs.get(key)
        if r is not None and r[-1] == addr:
            r[-1] = addr + PAGE_SIZE
        elif r is not None:
            r.extend((addr, addr + PAGE_SIZE))
        else:
            runs[key] = [addr, addr + PAGE_SIZE]
            order.append(key)
    origin_of = {o.oid: o for _s, _e, o in snap.origins}
    populated_into = {oid: OriginView(oid, ocall, okind, asked, otask)  # as they were when populated
                      for c in snap.calls.values() for oid, _m, okind, ocall, otask, asked, _n in c.replaced}
    for key in order:
        grade, kind, cid, oid = key
        if grade == OK:
            continue  # counted in v.pages; findings are what needs explaining
        r = runs[key]
        npages = sum((r[i + 1] - r[i]) >> 12 for i in range(0, len(r), 2))
        o = populated_into.get(oid) if kind.startswith("replacement") else origin_of.get(oid)
        v.add(Finding(grade, kind, _describe(snap, key, r[0], r[-1], npages, o), r[0], r[-1], cid, oid, npages))


def _iter_populated(pt: PageTable) -> Iterable[tuple[int, int, int, int]]:
    for key in sorted(pt.pmds):
        t = pt.pmds[key]
        st = t.state
        base = key << 21
        for i in range(512):
            s = st[i]
            if s & PTE_POPULATE and s & PTE_PRESENT:
                yield base + (i << 12), s, t.task[i], t.call[i]


def _grade_page(snap: Snapshot, addr: int, state: int, cid: int, origin: Optional[OriginView]) -> tuple[str, str]:
    vma = snap.vma_at(addr)
    if vma is None:
        return FORBIDDEN, "outside-vma"
    if state & PTE_WRITTEN and not vma.flags & (VM_WRITE | VM_MAYWRITE):
        return FORBIDDEN, "bad-state"
    if state & PTE_MLOCKED and not vma.flags & VM_LOCKED:
        return FORBIDDEN, "bad-state"
    if state & PTE_FILE and vma.file is None:
        return FORBIDDEN, "bad-state"
    call = snap.calls.get(cid)
    if call is None:
        return FORBIDDEN, "no-call"
    if origin is None:
        return FORBIDDEN, "no-origin"
    if state & PTE_REPLACEMENT:
        return FORBIDDEN, "replacement-populated"
    if state & PTE_REPLACEMENT_ASKED:
        return INTERESTING, "replacement-asked"
    return OK, "asked"


def _populated_oid(snap: Snapshot, cid: int, state: int) -> int:
    """The origin a replacement page was populated into, from its call's record: 0 when the call
    recorded several with that grade (the run is then described by them all)."""
    call = snap.calls.get(cid)
    if call is None:
        return 0
    mark = state & (PTE_REPLACEMENT | PTE_REPLACEMENT_ASKED)
    oids = {r[0] for r in call.replaced if r[1] == mark}
    return oids.pop() if len(oids) == 1 else 0


def _describe(snap: Snapshot, key: tuple[str, str, int, int], start: int, end: int, npages: int,
              origin: Optional[OriginView]) -> str:
    grade, kind, cid, oid = key
    call = snap.calls.get(cid)
    who = f"call#{cid} {call.task}: {call.name}" if call else f"call#{cid} (no record)"
    of = (f"origin#{oid} ({origin.kind} by {origin.task} call#{origin.call_id}"
          f"{', asked to populate' if origin.asked_populate else ', never asked to populate'})") if origin else "no origin"
    if origin is None and kind.startswith("replacement") and call is not None:
        mark = PTE_REPLACEMENT if kind == "replacement-populated" else PTE_REPLACEMENT_ASKED
        of = ", ".join(f"origin#{r[0]} ({r[2]} by {r[4]} call#{r[3]})" for r in call.replaced if r[1] == mark) \
            or "no origin"
    vma = snap.vma_at(start)
    span = f"{npages} pages in {start:#x}-{end:#x}"
    if kind == "asked":
        return f"{span} populated by {who} into {of}"
    if kind == "replacement-populated":
        return f"replacement populated: {span} by {who} into {of}, not one of its targets {sorted(call.targets) if call else []}"
    if kind == "replacement-asked":
        return f"replacement populated (it asked too): {span} by {who} into {of}"
    if kind == "outside-vma":
        return f"populated page outside any vma: {span} by {who}"
    if kind == "bad-state":
        return f"populated pages with a state {vma!r} does not allow: {span} by {who}"
    if kind == "no-origin":
        return f"populated pages with no mapping lineage: {span} by {who} in {vma!r}"
    return f"populated by a call with no record: {span} ({kind})"


# ---------------------------------------------------------------------------- invariants over calls
def call_ranges(call: CallView, start_brk: int = 0) -> list[tuple[int, int]]:
    """The address ranges a finished call may have changed (mapping, protection or lock bits)."""
    a = call.args
    r = call.result
    name = call.name

    def span(s: object, n: object) -> list[tuple[int, int]]:
        if isinstance(s, int) and isinstance(n, int) and n > 0:
            s0 = s & ~(PAGE_SIZE - 1)
            return [(s0, (s + n + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))]
        return []

    if name in ("mlockall", "munlockall"):
        return [(0, TASK_SIZE)]
    if name == "mmap":
        out = span(a[0], a[1]) if len(a) > 1 else []
        if isinstance(r, int) and len(a) > 1:
            out += span(r, a[1])
        return out
    if name == "mremap":
        out = span(a[0], a[1]) if len(a) > 1 else []
        if len(a) > 2:
            out += span(a[0], a[2])
        if len(a) > 4:
            out += span(a[4], a[2])
        if isinstance(r, int) and len(a) > 2:
            out += span(r, a[2])
        return out
    if name == "brk":
        hi = max([x for x in (a[0] if a else 0, r) if isinstance(x, int)] or [0])
        return [(start_brk, (hi + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))] if hi > start_brk else []
    if len(a) > 1:
        return span(a[0], a[1])
    return []


class _CallRanges:
    """The ranges finished calls changed, indexed by 2 MiB bucket, with when each call ended:
    "which calls touched [s, e) and had not finished before t?" without a scan of the history."""

    _SHIFT = 21
    _WIDE = 1 << 30

    def __init__(self, snap: Snapshot, names: frozenset[str]) -> None:
        self.buckets: dict[int, list[tuple[int, int, int, int]]] = {}
        self.wide: list[tuple[int, int, int, int]] = []
        for o in snap.history:
            if o.name not in names or o.failed:
                continue
            t_end = o.t_end if o.t_end >= 0 else 1 << 62
            for s, e in call_ranges(o, snap.start_brk):
                item = (s, e, t_end, o.call_id)
                if e - s >= self._WIDE:
                    self.wide.append(item)
                    continue
                for b in range(s >> self._SHIFT, ((e - 1) >> self._SHIFT) + 1):
                    self.buckets.setdefault(b, []).append(item)

    def _sorted(self) -> None:
        if not getattr(self, "_ready", False):
            for lst in list(self.buckets.values()) + [self.wide]:
                lst.sort(key=lambda it: it[2])
            self._keys = {b: [it[2] for it in lst] for b, lst in self.buckets.items()}
            self._wide_keys = [it[2] for it in self.wide]
            self._ready = True

    def uncovered(self, start: int, end: int, not_before: int, exclude: int) -> list[tuple[int, int]]:
        """What of [start, end) no indexed call (other than *exclude*, ending at or after
        *not_before*) touched; calls are tried in the order they ended, stopping once all is covered."""
        import bisect
        self._sorted()
        left = [(start, end)]
        lists = [(self.wide, self._wide_keys)]
        for b in range(start >> self._SHIFT, ((end - 1) >> self._SHIFT) + 1):
            if b in self.buckets:
                lists.append((self.buckets[b], self._keys[b]))
        for lst, keys in lists:
            for s, e, _t, cid in lst[bisect.bisect_left(keys, not_before):]:
                if cid != exclude and s < end and e > start:
                    left = _subtract_many(left, s, e)
                    if not left:
                        return left
        return left


def _subtract_many(parts: list[tuple[int, int]], hs: int, he: int) -> list[tuple[int, int]]:
    out = []
    for s, e in parts:
        if he <= s or hs >= e:
            out.append((s, e))
            continue
        if s < hs:
            out.append((s, hs))
        if he < e:
            out.append((he, e))
    return out


def _subtract(start: int, end: int, holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    parts = [(start, end)]
    for hs, he in holes:
        nxt = []
        for s, e in parts:
            if he <= s or hs >= e:
                nxt.append((s, e))
                continue
            if s < hs:
                nxt.append((s, hs))
            if he < e:
                nxt.append((he, e))
        parts = nxt
    return parts


def _check_locked_present(snap: Snapshot, v: Verdict) -> None:
    """A non-ONFAULT VM_LOCKED mapping a call asked to populate is fully present once the call
    returned -- except where another call changed that range meanwhile (mm_populate ignores the
    errors of a range made inaccessible or replaced under it)."""
    changed: Optional[_CallRanges] = None
    by_oid: dict[int, list[tuple[int, int]]] = {}
    for s, e, o in snap.origins:
        by_oid.setdefault(o.oid, []).append((s, e))
    for c in snap.history:
        if not c.populates or c.failed or c.t_end < 0 or not c.targets:
            continue
        for oid in sorted(c.targets):
            for s, e in by_oid.get(oid, ()):
                for vma in _vmas_in(snap, s, e):
                    f = vma.flags
                    if not f & VM_LOCKED or f & VM_LOCKONFAULT or not f & (VM_READ | VM_WRITE | VM_EXEC):
                        continue
                    lo, hi = max(s, vma.start), min(e, vma.end)
                    if vma.file is not None:  # populate stops at EOF
                        eof = vma.start + ((vma.file_pages - vma.pgoff) << 12)
                        hi = min(hi, max(eof, lo))
                    if lo >= hi:
                        continue
                    missing = (hi - lo) // PAGE_SIZE - snap.pt.count_present(lo, hi)
                    if not missing:
                        continue
                    if changed is None:
                        changed = _CallRanges(snap, _MAPPING_CALLS)
                    for ps, pe in changed.uncovered(lo, hi, c.t_start, c.call_id):
                        n = (pe - ps) // PAGE_SIZE - snap.pt.count_present(ps, pe)
                        if n:
                            v.add(Finding(FORBIDDEN, "locked-not-present",
                                          f"VM_LOCKED mapping not fully present after call#{c.call_id} "
                                          f"{c.task}: {c.name} returned: {n} of {(pe - ps) >> 12} pages absent in "
                                          f"{ps:#x}-{pe:#x} ({vma!r}), and no other call changed that range",
                                          ps, pe, c.call_id, oid, n))


def _vmas_in(snap: Snapshot, start: int, end: int) -> list[VmaView]:
    return [x for x in snap.vmas if x.start < end and x.end > start]


def _check_mappings_kept(snap: Snapshot, v: Verdict) -> None:
    """Every page an mmap() created still carries that mmap's origin, unless some call that can
    unmap or replace (munmap, mmap, mremap, brk, remap_file_pages) covered it later."""
    replacing: Optional[_CallRanges] = None
    kept_by_call: dict[int, list[tuple[int, int]]] = {}
    for s, e, o in snap.origins:
        kept_by_call.setdefault(o.call_id, []).append((s, e))
    for c in snap.history:
        if c.name != "mmap" or c.failed or not isinstance(c.result, int) or len(c.args) < 2:
            continue
        length = (c.args[1] + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        start, end = c.result, c.result + length
        kept = [(s, e) for s, e in kept_by_call.get(c.call_id, ()) if s < end and e > start]
        lost = _subtract(start, end, kept)
        if not lost:
            continue
        if replacing is None:
            replacing = _CallRanges(snap, _REPLACING_CALLS)
        for s, e in lost:
            for ls, le in replacing.uncovered(s, e, c.t_start, c.call_id):
                v.add(Finding(FORBIDDEN, "mapping-lost",
                              f"mapping lost: {ls:#x}-{le:#x} of call#{c.call_id} {c.task}: {c.describe()} "
                              f"is gone, and no call unmapped or replaced it", ls, le, c.call_id))


# ---------------------------------------------------------------------------- history
def format_history(snap: Snapshot, limit: int = 60) -> list[str]:
    """The calls of the snapshot in start order, each with its task, result and lock holds."""
    # a live snapshot (live.py) lists running calls in its history too: one line per call
    calls = sorted({c.call_id: c for c in [c for c in snap.calls.values() if c.t_end < 0] + snap.history}.values(),
                   key=lambda c: (c.t_start, c.call_id))
    if not calls:
        return ["(no calls recorded)"]
    t0 = calls[0].t_start
    holds: dict[int, list[LockView]] = {}
    for r in snap.locks:
        holds.setdefault(r.call_id, []).append(r)
    lines = []
    for i, c in enumerate(calls[-limit:], start=max(1, len(calls) - limit + 1)):
        hs = sorted(holds.get(c.call_id, ()), key=lambda r: r.acq_ns)
        lk = " ".join(f"{r.mode}{'.' + r.how if r.how else ''}[{(r.acq_ns - t0) / 1e6:.3f}-{(r.rel_ns - t0) / 1e6:.3f}]"
                      for r in hs[:8]) + (f" ... {len(hs) - 8} more" if len(hs) > 8 else "")
        end = f"{(c.t_end - t0) / 1e6:.3f}" if c.t_end >= 0 else "running"
        extra = f" populated {c.pages} pages, {c.retakes} lock takes, {c.io_waits} disk waits" if c.populates else ""
        lines.append(f"#{i:<3d} {(c.t_start - t0) / 1e6:9.3f}-{end:>9s} ms  {c.task:<10s} call#{c.call_id} "
                     f"{c.describe()}{extra}  locks: {lk or '-'}")
    return lines
