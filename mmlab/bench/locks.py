"""The recorded mmap_sem (mmlab.locking.MmapSem, as an MM uses it) against a bare
readerwriterlock RWLockFairD, uncontended acquire+release pairs, read and write, in CPU time
(mmlab.bench.timing)."""

from __future__ import annotations

from typing import Callable

from readerwriterlock.rwlock import RWLockFairD

from mmlab.bench.registry import Goal, Row, Run, benchmark
from mmlab.bench.timing import cpu_ns, paired
from mmlab.clock import ZERO_COSTS
from mmlab.mm.mm_struct import MM

ROUNDS = 40


@benchmark("mmap_sem", "recorded mmap_sem vs bare RWLockFairD: uncontended acquire+release pairs", rows=[
    Row("mmap_sem.read_model", "ns/pair", None, "mm.mmap_sem.down_read(); up_read()"),
    Row("mmap_sem.read_bare", "ns/pair", None, "RWLockFairD reader handle acquire(); release()"),
    Row("mmap_sem.read_ratio", "x", Goal("<=", 1.5), "recorded / bare, run by run"),
    Row("mmap_sem.write_model", "ns/pair", None, "mm.mmap_sem.down_write(); up_write()"),
    Row("mmap_sem.write_bare", "ns/pair", None, "RWLockFairD writer handle acquire(); release()"),
    Row("mmap_sem.write_ratio", "x", Goal("<=", 1.5), "recorded / bare, run by run"),
])
def _mmap_sem(quick: bool) -> Run:
    n = 40_000 if quick else 200_000
    sem = MM("v6.18", ZERO_COSTS).mmap_sem
    bare = RWLockFairD()
    rh, wh = bare.gen_rlock(), bare.gen_wlock()
    pc = cpu_ns

    def pair_loop(acq: Callable[[], object], rel: Callable[[], object]) -> Callable[[int], int]:
        """*per* acquire+release pairs, in thread CPU ns: the same loop for model and bare."""

        def pairs(per: int) -> int:
            t0 = pc()
            for _ in range(per):
                acq()
                rel()
            return pc() - t0

        return pairs

    model_read, model_write = pair_loop(sem.down_read, sem.up_read), pair_loop(sem.down_write, sem.up_write)
    bare_read, bare_write = pair_loop(rh.acquire, rh.release), pair_loop(wh.acquire, wh.release)

    def step() -> dict[str, float]:
        mr, br, rr = paired(model_read, bare_read, n, ROUNDS)
        mw, bw, rw = paired(model_write, bare_write, n, ROUNDS)
        return {
            "mmap_sem.read_model": mr, "mmap_sem.read_bare": br, "mmap_sem.read_ratio": rr,
            "mmap_sem.write_model": mw, "mmap_sem.write_bare": bw, "mmap_sem.write_ratio": rw,
        }

    return Run(step)
