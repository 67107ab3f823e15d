"""Kernel profiles: named, frozen sets of behaviour switches, one per patch.

Code asks ``if kernel.populate_after_unlock:``, never for a kernel's name, so a user can start
from a profile and flip one switch (``v3.7+populate_after_unlock``, ``v3.9-rc1+vm_populate=off``)
and see which patch removes which symptom.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields

__all__ = ["Kernel", "KERNELS", "get_kernel", "parse_kernels", "SWITCH_DOCS", "PATCH_ALIASES", "CLAIMS", "SINCE",
           "profile_for", "parse_release", "claiming_profile", "base_profile"]


@dataclass(frozen=True)
class Kernel:
    name: str
    description: str = ""
    # --- the mm_populate() series (Lespinasse, v3.9-rc1) ---
    mlockall_keeps_def_flags: bool = False
    """Patch 1: mlockall() toggles only VM_LOCKED in mm->def_flags instead of overwriting it."""
    fremap_fixes: bool = False
    """Patch 2: remap_file_pages() munlocks under the write lock; populate iff VM_LOCKED or !MAP_NONBLOCK."""
    populate_after_unlock: bool = False
    """Patch 3: mmap_region() callers populate via mm_populate() after up_write(), under down_read()."""
    fremap_populate_after_unlock: bool = False
    """Patch 4: blocking remap_file_pages() populates via mm_populate() after the lock is dropped."""
    brk_populate_after_unlock: bool = False
    """Patch 5: brk() under MCL_FUTURE populates via mm_populate() after up_write()."""
    mremap_populate_after_unlock: bool = False
    """Patch 6: mremap() growth of a VM_LOCKED vma populates via mm_populate() after up_write()."""
    vm_populate: bool = False
    """Patch 9: VM_POPULATE marks vmas to populate; __mm_populate() skips vmas without it (reverted)."""
    # --- behaviour common to every kernel here, but switchable ---
    populate_fault_retry: bool = True
    """__mm_populate() passes FAULT_FLAG_ALLOW_RETRY: a file fault waiting on disk drops mmap_sem (2.6.38)."""
    # --- later kernels ---
    munmap_downgrade: bool = False
    """v4.20: munmap() and a shrinking brk() detach vmas under the write lock, then downgrade_write() and zap under read."""
    mlock_onfault: bool = False
    """v4.4: mlock2(MLOCK_ONFAULT), mlockall(MCL_ONFAULT) and VM_LOCKONFAULT."""
    fremap_emulated: bool = False
    """v4.0: remap_file_pages() is emulated with do_mmap(MAP_FIXED) of ordinary vmas."""
    populate_skips_inaccessible: bool = False
    """6.x populate_vma_page_range(): PROT_NONE vmas give -EFAULT and VM_LOCKONFAULT vmas are skipped."""
    per_vma_lock: bool = False
    """v6.4: page faults take a per-VMA read lock first and fall back to mmap_lock on failure."""
    madvise_vma_lock: bool = False
    """6.17: madvise(MADV_DONTNEED/DONTNEED_LOCKED/FREE) inside one vma takes its per-VMA read lock, not mmap_lock."""
    mprotect_populates_locked: bool = False
    """v4.9: mprotect() making a private VM_LOCKED vma writable breaks COW on its pages at once."""
    mremap_dontunmap: bool = False
    """v5.7: mremap(MREMAP_DONTUNMAP) moves the pages and leaves the old vma in place, empty."""
    madv_free: bool = False
    """v4.5: madvise(MADV_FREE) on private anonymous memory (EINVAL before)."""
    madv_wipeonfork: bool = False
    """v4.14: madvise(MADV_WIPEONFORK / MADV_KEEPONFORK), VM_WIPEONFORK."""
    madv_cold_pageout: bool = False
    """v5.4: madvise(MADV_COLD / MADV_PAGEOUT)."""
    madv_dontneed_locked: bool = False
    """v5.18: madvise(MADV_DONTNEED_LOCKED) zaps VM_LOCKED vmas too."""
    map_droppable: bool = False
    """v6.11: mmap(MAP_DROPPABLE): private anonymous memory the kernel may drop; VM_DROPPABLE."""
    madv_guard: bool = False
    """v6.13: madvise(MADV_GUARD_INSTALL / MADV_GUARD_REMOVE) guard markers (file-backed vmas too, 6.15)."""
    mremap_move_multi_vma: bool = False
    """v6.17: mremap(MREMAP_FIXED) without resize moves every vma of the range together, holes kept."""
    thp_get_unmapped_area: bool = False
    """v5.18: file mappings of the disk's file system search for len + 2 MiB and align (__thp_get_unmapped_area)."""
    thp_align_anon: bool = False
    """v6.7: hint-less anonymous mappings whose length is a multiple of 2 MiB are 2 MiB aligned."""
    stack_guard_gap: int = 1
    fault_around_pages: int = 0
    """v3.15: a read fault on a file vma also maps the cached pages around it (do_fault_around(),
    fault_around_bytes = 64 KiB: 16 pages). 0: only the faulting page (modelled so before)."""
    """v4.12: pages kept free below a VM_GROWSDOWN vma (stack_guard_gap; 256 since 4.12, one page before)."""
    # --- our proposal ---
    populate_batch_pages: int = 0
    """bounded: populate holds mmap_sem read for at most this many pages, then drops it if a writer waits (0: never)."""
    populate_checks_identity: bool = False
    """bounded: after every re-take, populate only vmas of the mappings the call asked to populate."""
    populate_yield_after_us: int = 0
    """bounded: at a batch boundary, yield only to a waiter queued at least this long (us of modelled time, scaled with the costs; 0: any waiter)."""
    populate_batch_max_pages: int = 0
    """bounded: the batch doubles after each check that finds nobody waiting, up to this many pages; back to populate_batch_pages after a yield (0: fixed)."""
    populate_vma_lock: bool = False
    """bounded: after the lookup under mmap_sem, populate each vma under its per-VMA read lock (vma_start_read_locked()), dropped and re-taken every populate_batch_pages; needs per_vma_lock and populate_batch_pages."""

    def with_switches(self, **changes: object) -> "Kernel":
        """A copy with some switches flipped; the name records what changed."""
        if not changes:
            return self
        suffix = "".join(f"+{k}" if v is True else f"+{k}={_fmt(v)}" for k, v in changes.items())
        return dataclasses.replace(self, name=self.name + suffix, **changes)  # type: ignore[arg-type]

    def switches(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("name", "description")}

    def diff(self, other: "Kernel") -> dict[str, tuple[object, object]]:
        a, b = self.switches(), other.switches()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def _fmt(v: object) -> str:
    if v is False:
        return "off"
    return str(v)


# Docstrings of dataclass fields are not kept by Python; keep them here for `mmlab kernels`.
SWITCH_DOCS: dict[str, str] = {
    "mlockall_keeps_def_flags": "patch 1: mlockall toggles only VM_LOCKED in def_flags",
    "fremap_fixes": "patch 2: remap_file_pages munlocks under write lock; populate iff LOCKED or !NONBLOCK",
    "populate_after_unlock": "patch 3: mmap populates in mm_populate() after up_write, under down_read",
    "fremap_populate_after_unlock": "patch 4: remap_file_pages populates after the lock is dropped",
    "brk_populate_after_unlock": "patch 5: brk under MCL_FUTURE populates after up_write",
    "mremap_populate_after_unlock": "patch 6: mremap growth of a VM_LOCKED vma populates after up_write",
    "vm_populate": "patch 9: VM_POPULATE; populate skips vmas without it (reverted before 3.9)",
    "populate_fault_retry": "FAULT_FLAG_ALLOW_RETRY in populate: a disk wait drops mmap_sem (2.6.38)",
    "munmap_downgrade": "4.20: munmap and brk shrink zap pages under the read lock after downgrade_write",
    "mlock_onfault": "4.4: mlock2(MLOCK_ONFAULT), MCL_ONFAULT, VM_LOCKONFAULT",
    "fremap_emulated": "4.0: remap_file_pages emulated by do_mmap(MAP_FIXED)",
    "populate_skips_inaccessible": "6.x: populate skips PROT_NONE and VM_LOCKONFAULT vmas",
    "per_vma_lock": "6.4: page faults use a per-VMA lock, falling back to mmap_lock",
    "madvise_vma_lock": "6.17: madvise(MADV_DONTNEED) within one vma takes the per-VMA lock, not mmap_lock",
    "mprotect_populates_locked": "4.9: mprotect making a private VM_LOCKED vma writable breaks COW at once",
    "mremap_dontunmap": "5.7: mremap(MREMAP_DONTUNMAP) moves the pages, leaves the old vma empty",
    "madv_free": "4.5: madvise(MADV_FREE) on private anonymous memory",
    "madv_wipeonfork": "4.14: madvise(MADV_WIPEONFORK / MADV_KEEPONFORK)",
    "madv_cold_pageout": "5.4: madvise(MADV_COLD / MADV_PAGEOUT)",
    "madv_dontneed_locked": "5.18: madvise(MADV_DONTNEED_LOCKED) zaps VM_LOCKED vmas too",
    "map_droppable": "6.11: mmap(MAP_DROPPABLE), VM_DROPPABLE",
    "madv_guard": "6.13: MADV_GUARD_INSTALL/REMOVE guard markers (file vmas since 6.15)",
    "mremap_move_multi_vma": "6.17: mremap(MREMAP_FIXED) of an unresized range moves all its vmas",
    "thp_get_unmapped_area": "5.18: disk-file mappings search len + 2 MiB and align to 2 MiB",
    "thp_align_anon": "6.7: hint-less anon mappings of a 2 MiB multiple are 2 MiB aligned",
    "fault_around_pages": "3.15: a read fault on a file vma maps the cached pages of 16 around it",
    "stack_guard_gap": "4.12: pages kept free below a VM_GROWSDOWN vma (256; 1 before)",
    "populate_batch_pages": "bounded: read hold at most N pages, dropped when a writer waits (0: never)",
    "populate_checks_identity": "bounded: populate only the mappings the call asked for",
    "populate_yield_after_us": "bounded: yield only to a waiter queued at least N us (0: any waiter)",
    "populate_batch_max_pages": "bounded: batch doubles while nobody waits, up to N pages (0: fixed)",
    "populate_vma_lock": "bounded: populate under the per-VMA read lock, re-taken every batch, not mmap_sem",
}

PATCH_ALIASES: dict[str, str] = {
    "patch1": "mlockall_keeps_def_flags",
    "patch2": "fremap_fixes",
    "patch3": "populate_after_unlock",
    "patch4": "fremap_populate_after_unlock",
    "patch5": "brk_populate_after_unlock",
    "patch6": "mremap_populate_after_unlock",
    "patch9": "vm_populate",
}

_SERIES = dict(
    mlockall_keeps_def_flags=True,
    fremap_fixes=True,
    populate_after_unlock=True,
    fremap_populate_after_unlock=True,
    brk_populate_after_unlock=True,
    mremap_populate_after_unlock=True,
)

V3_7 = Kernel("v3.7", "before the series: populate inside the mmap_sem write section")
V3_9_RC1 = Kernel("v3.9-rc1", "the series as merged, with VM_POPULATE (patch 9)", **_SERIES, vm_populate=True)
V3_9 = Kernel("v3.9", "the series with VM_POPULATE reverted (what shipped)", **_SERIES)
V6_18 = Kernel(
    "v6.18",
    "today: per-VMA-lock faults, munmap downgrade, MCL_ONFAULT, emulated remap_file_pages",
    **_SERIES,
    munmap_downgrade=True,
    mlock_onfault=True,
    fremap_emulated=True,
    populate_skips_inaccessible=True,
    per_vma_lock=True,
    madvise_vma_lock=True,
    mprotect_populates_locked=True,
    mremap_dontunmap=True,
    madv_free=True,
    madv_wipeonfork=True,
    madv_cold_pageout=True,
    madv_dontneed_locked=True,
    map_droppable=True,
    madv_guard=True,
    mremap_move_multi_vma=True,
    thp_get_unmapped_area=True,
    thp_align_anon=True,
    stack_guard_gap=256,
    fault_around_pages=16,
)
# bounded's policy, chosen with `mmlab tune` (README, docs/tune-vma-lock.png, docs/tune-batch.png):
# populate each vma under its per-VMA read lock, dropped and re-taken every 512 pages
# (populate_vma_lock): a writer elsewhere in the address space does not wait at all (0 ms,
# 0.999x at 256 MiB, against 0.93 ms, 1.012x for the mmap_sem yield alone), a writer on the
# populated vma waits at most one batch. Under mmap_sem (populate_vma_lock=off, and after a
# re-take fails) it yields at every 512-page boundary a writer waits at: on the Pareto front at
# a writer every 250 us and under a writer storm; a 500 us threshold with 64-page checks
# (populate_yield_after_us) and a growing batch (populate_batch_max_pages) did not beat it.
BOUNDED = dataclasses.replace(
    V6_18,
    name="bounded",
    description="proposal: populate under the per-VMA lock in batches that yield to writers, identity-checked",
    populate_batch_pages=512,
    populate_checks_identity=True,
    populate_vma_lock=True,
)

KERNELS: dict[str, Kernel] = {k.name: k for k in (V3_7, V3_9_RC1, V3_9, V6_18, BOUNDED)}


def get_kernel(spec: str | Kernel) -> Kernel:
    """A profile by name, optionally with switches flipped: ``v3.7+patch3``, ``v3.9-rc1+vm_populate=off``,
    ``bounded+populate_batch_pages=64``. Raises ValueError naming what is unknown."""
    if isinstance(spec, Kernel):
        return spec
    parts = spec.strip().split("+")
    base = parts[0]
    if base not in KERNELS:
        raise ValueError(f"unknown kernel {base!r}; known: {', '.join(KERNELS)}")
    changes: dict[str, object] = {}
    defaults = KERNELS[base].switches()
    for p in parts[1:]:
        key, _, val = p.partition("=")
        key = PATCH_ALIASES.get(key, key)
        if key not in defaults:
            raise ValueError(f"unknown switch {key!r} in {spec!r}; known: {', '.join(defaults)}")
        cur = defaults[key]
        if isinstance(cur, bool):
            if val in ("", "on", "1", "true", "yes"):
                changes[key] = True
            elif val in ("off", "0", "false", "no"):
                changes[key] = False
            else:
                raise ValueError(f"switch {key!r} takes on/off, not {val!r}")
        else:
            try:
                changes[key] = int(val)
            except ValueError:
                raise ValueError(f"switch {key!r} takes a whole number, not {val!r}") from None
    return KERNELS[base].with_switches(**changes)


def parse_kernels(spec: str) -> list[Kernel]:
    """A comma-separated list of kernel specs; ``all`` for every profile."""
    if spec.strip() in ("", "all"):
        return list(KERNELS.values())
    return [get_kernel(s) for s in spec.split(",") if s.strip()]


# The release that brought each behaviour v6.18 has on (a switch whose value differs from
# Kernel's default). The profile for a real kernel is v6.18 with the switches of every behaviour
# newer than that kernel set back to their defaults: behaviour, not a profile's name, decides.
# A switch that gates two behaviours is dated by the newer: populate_skips_inaccessible gates
# MADV_POPULATE_READ/WRITE (5.14) and skipping VM_LOCKONFAULT vmas in populate (4.4), so on 4.4-5.13
# the model faults an MLOCK_ONFAULT vma's pages in populate where Linux skips them; madv_guard
# covers anonymous (6.13) and file-backed (6.15) vmas, so 6.13-6.14 are held to a model without
# MADV_GUARD_INSTALL (EINVAL where Linux installs guards in anonymous memory).
SINCE: dict[str, tuple[int, int]] = {
    "mlockall_keeps_def_flags": (3, 9),
    "fremap_fixes": (3, 9),
    "populate_after_unlock": (3, 9),
    "fremap_populate_after_unlock": (3, 9),
    "brk_populate_after_unlock": (3, 9),
    "mremap_populate_after_unlock": (3, 9),
    "fault_around_pages": (3, 15),
    "fremap_emulated": (4, 0),
    "mlock_onfault": (4, 4),
    "madv_free": (4, 5),
    "mprotect_populates_locked": (4, 9),
    "stack_guard_gap": (4, 12),
    "madv_wipeonfork": (4, 14),
    "munmap_downgrade": (4, 20),
    "madv_cold_pageout": (5, 4),
    "mremap_dontunmap": (5, 7),
    "populate_skips_inaccessible": (5, 14),
    "madv_dontneed_locked": (5, 18),
    "thp_get_unmapped_area": (5, 18),
    "per_vma_lock": (6, 4),
    "thp_align_anon": (6, 7),
    "map_droppable": (6, 11),
    "madv_guard": (6, 15),
    "madvise_vma_lock": (6, 17),
    "mremap_move_multi_vma": (6, 17),
}
CLAIM_FLOOR = (3, 7)
"""The oldest release a profile stands for: before it, behaviour the switches do not describe (no
FAULT_FLAG_ALLOW_RETRY in populate before 2.6.38, and nothing here was checked against 3.6 or older)."""
NEWEST = V6_18


def profile_for(version: tuple[int, int]) -> str | None:
    """The profile spec for release *version*: ``v6.18`` with every switch of SINCE newer than it
    turned off (``v6.18+madvise_vma_lock=off+mremap_move_multi_vma=off`` for 6.15-6.16), or the
    named profile whose switches
    are exactly those (``v3.9`` for 3.9-3.19). None before CLAIM_FLOOR."""
    if version < CLAIM_FLOOR:
        return None
    default = Kernel("default").switches()
    changes = {k: default[k] for k, since in SINCE.items() if version < since}
    k = NEWEST.with_switches(**changes)
    for named in (V3_7, V3_9):  # a shorter name for the same switches
        if named.switches() == k.switches():
            return named.name
    return k.name


def _claims() -> list[tuple[tuple[int, int], tuple[int, int], str]]:
    """[from, to) release ranges and the spec each maps to, merged where the spec is the same."""
    edges = sorted({CLAIM_FLOOR, *SINCE.values()})
    out: list[tuple[tuple[int, int], tuple[int, int], str]] = []
    for lo, hi in zip(edges, edges[1:] + [(1 << 16, 0)]):
        spec = profile_for(lo)
        assert spec is not None
        if out and out[-1][2] == spec:
            out[-1] = (out[-1][0], hi, spec)
        else:
            out.append((lo, hi, spec))
    return out


CLAIMS: list[tuple[tuple[int, int], tuple[int, int], str]] = _claims()
"""[from, to) release ranges, each with the profile spec that stands for it (derived from SINCE)."""


def parse_release(release: str) -> tuple[int, int]:
    """(major, minor) of a kernel release string such as ``6.18.44-fc-v595`` or ``3.9.0-rc1``."""
    import re
    m = re.match(r"\s*v?(\d+)\.(\d+)", release)
    if not m:
        raise ValueError(f"not a kernel release: {release!r}")
    return int(m.group(1)), int(m.group(2))


def claiming_profile(release: str) -> str | None:
    """The profile spec that claims kernel *release* (CLAIMS, from SINCE), or None before CLAIM_FLOOR."""
    return profile_for(parse_release(release))


def base_profile(k: Kernel) -> Kernel:
    """The named profile *k* was made from (itself for a profile, v6.18 for ``v6.18+per_vma_lock=off``)."""
    base = KERNELS.get(k.name.partition("+")[0])  # with_switches() names a variant base+switch...
    return base if base is not None else k
