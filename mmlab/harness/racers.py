"""Racers: another thread of the same process changing the range a populate is working on.

Each racer is fired once per round at a seeded random moment after the populating call starts.
It never touches the memory it maps, so any of its pages that end up present were made present
by somebody else's populate -- the oracle (mmlab.harness.oracle) grades them.

* ``munmap-mmap``  -- munmap() the range, then mmap(MAP_FIXED) an anonymous replacement, not
  populated (two write-lock holds: the populate may see the hole or the replacement);
* ``mmap-fixed``   -- one mmap(MAP_FIXED) over the range (mmap_region() unmaps and maps under one
  write hold);
* ``mremap-fixed`` -- mremap(MREMAP_MAYMOVE|MREMAP_FIXED) of an untouched donor onto the range
  (move_vma(): the donor's lineage moves in);
* ``mprotect``     -- the control: PROT_NONE over part of the range, then back. The mapping keeps
  its identity, so no profile may report FORBIDDEN; a populate that skips the part made
  inaccessible is not an error (mm_populate() ignores errors);
* ``mmap-fixed-populate`` (not in the default set) -- mmap(MAP_FIXED|MAP_POPULATE): a
  replacement that asked to be populated itself, which patch 9 (VM_POPULATE) accepted and the
  oracle grades INTERESTING.
* ``mmap-fixed-unmap`` (not in the default set) -- mmap(MAP_FIXED) of an unpopulated
  replacement, kept for a seeded 0.5-2 disk read-ahead windows, then munmap()ed: a populate
  that faulted it in leaves no trace in the final state, only the live oracle (--check-live,
  mmlab.harness.live) can see it.

These are the three replacements of the real-kernel measurement (research/real-kernel-6.18.md,
section E) plus the mprotect control; the racers know nothing of kernel profiles.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from mmlab.flags import (MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_POPULATE, MAP_PRIVATE, MREMAP_FIXED,
                         MREMAP_MAYMOVE, PAGE_SIZE, PROT_NONE, PROT_READ, PROT_WRITE)
from mmlab.harness.populators import Populator, PopState
from mmlab.mm.mm_struct import MM

__all__ = ["Racer", "RACERS", "DEFAULT_RACERS", "get_racers", "restore_prot"]

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS

Prepared = dict


@dataclass(frozen=True)
class Racer:
    """``prepare(mm, pop, st, rng)`` runs in the racer's thread before the populate starts (it
    may map a donor); ``fire(mm, st, prepared)`` runs at the chosen moment. ``replaces``: the
    racer puts another mapping in the range (False for the mprotect control)."""

    name: str
    description: str
    prepare: Callable[[MM, Populator, PopState, random.Random], Prepared]
    fire: Callable[[MM, PopState, Prepared], None]
    replaces: bool = True


def restore_prot(pop: Populator) -> int:
    """The protection the populator maps its range with (what the mprotect racer restores)."""
    return PROT_READ if pop.name == "populate-file" else RW


def _nothing(mm: MM, pop: Populator, st: PopState, rng: random.Random) -> Prepared:
    return {}


def _munmap_mmap(mm: MM, st: PopState, p: Prepared) -> None:
    mm.munmap(st.addr, st.length)
    mm.mmap(st.addr, st.length, RW, ANON | MAP_FIXED)


def _mmap_fixed(mm: MM, st: PopState, p: Prepared) -> None:
    mm.mmap(st.addr, st.length, RW, ANON | MAP_FIXED)


def _mmap_fixed_populate(mm: MM, st: PopState, p: Prepared) -> None:
    mm.mmap(st.addr, st.length, RW, ANON | MAP_FIXED | MAP_POPULATE)


def _hold_time(mm: MM, pop: Populator, st: PopState, rng: random.Random) -> Prepared:
    return {"hold_ns": int(mm.costs.disk_window_ns * rng.uniform(0.5, 2.0))}


def _mmap_fixed_unmap(mm: MM, st: PopState, p: Prepared) -> None:
    mm.mmap(st.addr, st.length, RW, ANON | MAP_FIXED)
    mm.clock.wait(p["hold_ns"], "racer keeps the replacement")
    mm.munmap(st.addr, st.length)


def _donor(mm: MM, pop: Populator, st: PopState, rng: random.Random) -> Prepared:
    """An untouched anonymous mapping of the range's size, away from it: PROT_NONE
    placeholders hold the free parts of the target range while the donor is placed, so the
    donor cannot land where the populator is about to map (or grow)."""
    held = []
    pos, end = st.addr, st.addr + st.length
    for v in mm.maps():  # the populator waits at the barrier: the model is quiet
        if v.end <= pos or v.start >= end:
            continue
        if v.start > pos:
            held.append((pos, v.start - pos))
        pos = max(pos, v.end)
    if pos < end:
        held.append((pos, end - pos))
    for a, n in held:
        mm.mmap(a, n, PROT_NONE, ANON | MAP_FIXED_NOREPLACE)
    try:
        return {"donor": mm.mmap(0, st.length, RW, ANON)}
    finally:
        for a, n in held:
            mm.munmap(a, n)


def _mremap_fixed(mm: MM, st: PopState, p: Prepared) -> None:
    mm.mremap(p["donor"], st.length, st.length, MREMAP_MAYMOVE | MREMAP_FIXED, st.addr)


def _protect_part(mm: MM, pop: Populator, st: PopState, rng: random.Random) -> Prepared:
    """A random part of the range: at least one page, at most half of it."""
    pages = st.length // PAGE_SIZE
    n = rng.randint(1, max(1, pages // 2))
    first = rng.randrange(0, pages - n + 1)
    return {"start": st.addr + first * PAGE_SIZE, "len": n * PAGE_SIZE, "prot": restore_prot(pop)}


def _mprotect(mm: MM, st: PopState, p: Prepared) -> None:
    mm.mprotect(p["start"], p["len"], PROT_NONE)
    mm.mprotect(p["start"], p["len"], p["prot"])


RACERS: dict[str, Racer] = {r.name: r for r in (
    Racer("munmap-mmap", "munmap(), then mmap(MAP_FIXED) of an unpopulated anonymous replacement",
          _nothing, _munmap_mmap),
    Racer("mmap-fixed", "mmap(MAP_FIXED) of an unpopulated anonymous replacement in one call",
          _nothing, _mmap_fixed),
    Racer("mremap-fixed", "mremap(MREMAP_MAYMOVE|MREMAP_FIXED) of an untouched donor onto the range",
          _donor, _mremap_fixed),
    Racer("mprotect", "control: mprotect(PROT_NONE) of part of the range, then back (identity kept)",
          _protect_part, _mprotect, replaces=False),
    Racer("mmap-fixed-populate", "mmap(MAP_FIXED|MAP_POPULATE): a replacement that asked to be populated",
          _nothing, _mmap_fixed_populate),
    Racer("mmap-fixed-unmap", "mmap(MAP_FIXED) of an unpopulated replacement, unmapped again a little later "
          "(transient: only --check-live sees it populated)", _hold_time, _mmap_fixed_unmap),
)}

DEFAULT_RACERS = ("munmap-mmap", "mmap-fixed", "mremap-fixed", "mprotect")


def get_racers(spec: str) -> list[Racer]:
    """A comma-separated list of racer names; ``all`` (or empty) for the four of the issue,
    ``every`` to add mmap-fixed-populate and mmap-fixed-unmap."""
    s = spec.strip()
    if s in ("", "all"):
        return [RACERS[n] for n in DEFAULT_RACERS]
    if s == "every":
        return list(RACERS.values())
    out = []
    for name in (x.strip() for x in s.split(",") if x.strip()):
        if name not in RACERS:
            raise ValueError(f"unknown racer {name!r}; known: {', '.join(RACERS)}")
        out.append(RACERS[name])
    return out
