"""Benchmarks of populate: speed with zero costs against the real kernel's MAP_POPULATE, and the
memory the model spends per populated page (page table with provenance, and everything else a
populate allocates), measured with tracemalloc."""

from __future__ import annotations

import gc
import time
import tracemalloc

from mmlab.bench.libc import RealMM, real_unavailable
from mmlab.bench.registry import Goal, Row, Run, benchmark
from mmlab.clock import ZERO_COSTS
from mmlab.flags import MAP_ANONYMOUS, MAP_POPULATE, MAP_PRIVATE, PROT_READ, PROT_WRITE
from mmlab.mm.mm_struct import MM

RW = PROT_READ | PROT_WRITE
POPULATE = MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE
GIB = 1 << 30


@benchmark("populate_anon", "anonymous MAP_POPULATE of 1 GiB, pages per second: the model (v6.18, zero costs), "
           "which fills a byte array of pte state (7 bytes a page, slices per 2 MiB), against the real kernel, "
           "which allocates and zeroes a 4 KiB page per pte", rows=[
    Row("populate_anon.model", "Mpages/s", None,
        "pages made present per second by MM.mmap(MAP_POPULATE): array slice fills, no page memory touched"),
    Row("populate_anon.real", "Mpages/s", None,
        "the real kernel's mmap(MAP_POPULATE) through ctypes, same run: zeroing 4 KiB pages"),
    Row("populate_anon.ratio", "x", Goal(">=", 1),
        "model / real pages per second, run by run. The goal (>= 1) means the model's bookkeeping never "
        "makes a populate slower than the kernel's own page zeroing it stands for, so a size that the real "
        "kernel populates in a run fits the model's run time too; it is not a claim that the model does "
        "the same work"),
])
def _populate_anon(quick: bool) -> Run:
    size = GIB
    pages = size >> 12
    mm = MM("v6.18", ZERO_COSTS)
    why = real_unavailable()
    real = None if why else RealMM()

    def step() -> dict[str, float]:
        pc = time.perf_counter_ns
        t0 = pc()
        a = mm.mmap(0, size, RW, POPULATE)
        tm = pc() - t0
        mm.munmap(a, size)
        out = {"populate_anon.model": pages / tm * 1e3}
        if real is not None:
            t0 = pc()
            ra = real.mmap(size, RW, POPULATE)
            tr = pc() - t0
            real.munmap(ra, size)
            out["populate_anon.real"] = pages / tr * 1e3
            out["populate_anon.ratio"] = tr / tm
        return out

    return Run(step, notes=[f"real kernel: {why}"] if why else [])


def _populate_bytes(size: int) -> int:
    """Bytes of Python memory a fresh MM holds after an anonymous MAP_POPULATE of *size*."""
    gc.collect()
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        mm = MM("v6.18", ZERO_COSTS, layout="bare")
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        mm.mmap(0, size, RW, POPULATE)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        assert mm.pt.nr_present == size >> 12, "populate left pages out"
        del mm
    finally:
        if started:
            tracemalloc.stop()
    return after - before


@benchmark("populate_memory", "memory per populated page (4 GiB populate) and the largest populate fitting in 1 GiB", rows=[
    Row("populate_memory.bytes_per_page", "B/page", Goal("<=", 16),
        "traced bytes after a 4 GiB populate / pages; page table with provenance and all else"),
    Row("populate_memory.mib_for_64gib", "MiB", Goal("<=", 1024), "traced memory of a 64 GiB populate"),
    Row("populate_memory.fits_in_1gib", "GiB", Goal(">=", 64), "largest populate fitting in 1 GiB, from the 64 GiB measurement"),
])
def _populate_memory(quick: bool) -> Run:
    def step() -> dict[str, float]:
        b4 = _populate_bytes(4 * GIB)
        b64 = _populate_bytes(64 * GIB)
        return {
            "populate_memory.bytes_per_page": b4 / ((4 * GIB) >> 12),
            "populate_memory.mib_for_64gib": b64 / (1 << 20),
            "populate_memory.fits_in_1gib": 64 * GIB / b64,
        }

    return Run(step)
