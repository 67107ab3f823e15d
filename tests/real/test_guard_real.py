"""MADV_GUARD_INSTALL on the real kernel through RealMM: a guarded page is refused by touch()
(pagemap bit 58, PM_GUARD_REGION) with the model's SIGSEGV -- the real access would kill the
interpreter -- and the model agrees page for page (residency, result) on the same calls."""

from __future__ import annotations

from mmlab import (MADV_DONTNEED, MADV_GUARD_INSTALL, MADV_GUARD_REMOVE, MAP_ANONYMOUS, MAP_FIXED, MAP_POPULATE,
                   MAP_PRIVATE, MM, PAGE_SIZE, PROT_READ, PROT_WRITE, SIGSEGV, ZERO_COSTS)
from mmlab.real.backend import Region

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE


def _run(mm, base: int) -> list[object]:
    out: list[object] = []
    mm.mmap(base, 6 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_POPULATE)
    out.append(mm.madvise(base + P, 2 * P, MADV_GUARD_INSTALL))
    out.append(mm.mincore(base, 6 * P))
    for a in (base + P, base + 3 * P):
        try:
            mm.touch(a, write=True)
            out.append("ok")
        except SIGSEGV:
            out.append("SIGSEGV")
    out.append(mm.madvise(base, 6 * P, MADV_DONTNEED))
    out.append(mm.madvise(base + P, P, MADV_GUARD_REMOVE))
    mm.touch(base + P)
    out.append(mm.mincore(base, 6 * P))
    return out


def test_guard_markers_real_and_model_agree() -> None:
    with Region(16 * P, keep_reserved=False) as reg:
        real = _run(reg.mm, reg.base)
    m = MM("v6.18", ZERO_COSTS, layout="bare")
    base = 0x10000000
    model = _run(m, base)
    assert real == model, (real, model)
    assert real[1] == b"\x01\x00\x00\x01\x01\x01" and real[2:4] == ["SIGSEGV", "ok"]
