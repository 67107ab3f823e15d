"""Kernel profiles: named, frozen sets of behaviour switches, one per patch.

Code asks ``if kernel.populate_after_unlock:``, never for a kernel's name, so a user can start
from a profile and flip one switch (``v3.7+populate_after_unlock``, ``v3.9-rc1+vm_populate=off``)
and see which patch removes which symptom.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields

__all__ = ["Kernel", "KERNELS", "get_kernel", "parse_kernels", "SWITCH_DOCS", "PATCH_ALIASES"]


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
    """v4.20: munmap() detaches vmas under the write lock, then downgrade_write() and zaps under read."""
    mlock_onfault: bool = False
    """v4.4: mlock2(MLOCK_ONFAULT), mlockall(MCL_ONFAULT) and VM_LOCKONFAULT."""
    fremap_emulated: bool = False
    """v4.0: remap_file_pages() is emulated with do_mmap(MAP_FIXED) of ordinary vmas."""
    populate_skips_inaccessible: bool = False
    """6.x populate_vma_page_range(): PROT_NONE vmas give -EFAULT and VM_LOCKONFAULT vmas are skipped."""
    per_vma_lock: bool = False
    """v6.4: page faults take a per-VMA read lock first and fall back to mmap_lock on failure."""
    mprotect_populates_locked: bool = False
    """v4.9: mprotect() making a private VM_LOCKED vma writable breaks COW on its pages at once."""
    mremap_dontunmap: bool = False
    """v5.7: mremap(MREMAP_DONTUNMAP) moves the pages and leaves the old vma in place, empty."""
    # --- our proposal ---
    populate_batch_pages: int = 0
    """bounded: populate holds mmap_sem read for at most this many pages, then drops it if a writer waits (0: never)."""
    populate_checks_identity: bool = False
    """bounded: after every re-take, populate only vmas of the mappings the call asked to populate."""
    populate_yield_after_us: int = 0
    """bounded: at a batch boundary, yield only to a waiter queued at least this long (us of modelled time, scaled with the costs; 0: any waiter)."""
    populate_batch_max_pages: int = 0
    """bounded: the batch doubles after each check that finds nobody waiting, up to this many pages; back to populate_batch_pages after a yield (0: fixed)."""

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
    "munmap_downgrade": "4.20: munmap zaps pages under the read lock after downgrade_write",
    "mlock_onfault": "4.4: mlock2(MLOCK_ONFAULT), MCL_ONFAULT, VM_LOCKONFAULT",
    "fremap_emulated": "4.0: remap_file_pages emulated by do_mmap(MAP_FIXED)",
    "populate_skips_inaccessible": "6.x: populate skips PROT_NONE and VM_LOCKONFAULT vmas",
    "per_vma_lock": "6.4: page faults use a per-VMA lock, falling back to mmap_lock",
    "mprotect_populates_locked": "4.9: mprotect making a private VM_LOCKED vma writable breaks COW at once",
    "mremap_dontunmap": "5.7: mremap(MREMAP_DONTUNMAP) moves the pages, leaves the old vma empty",
    "populate_batch_pages": "bounded: read hold at most N pages, dropped when a writer waits (0: never)",
    "populate_checks_identity": "bounded: populate only the mappings the call asked for",
    "populate_yield_after_us": "bounded: yield only to a waiter queued at least N us (0: any waiter)",
    "populate_batch_max_pages": "bounded: batch doubles while nobody waits, up to N pages (0: fixed)",
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
    mprotect_populates_locked=True,
    mremap_dontunmap=True,
)
# bounded's policy, chosen with `mmlab tune` (README, docs/tune-batch.png): yield at every 512-page
# boundary a writer waits at. On the Pareto front at a writer every 250 us (0.87 ms, 1.011x at
# 256 MiB) and under a writer storm (1.25 ms, 1.004x: at most one yield per batch); a 500 us
# threshold with 64-page checks (populate_yield_after_us) and a growing batch
# (populate_batch_max_pages) did not beat it.
BOUNDED = dataclasses.replace(
    V6_18,
    name="bounded",
    description="proposal: bounded read holds that yield to writers, identity-checked populate",
    populate_batch_pages=512,
    populate_checks_identity=True,
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
