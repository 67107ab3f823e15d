"""Benchmarks of mmlab.trace: what tracing costs a busy mm loop, and how fast the text parses.

* ``trace.loop_*``: one-page mmap+munmap pairs (real kernel, ctypes), untraced and then inside a
  Capture of this process, alternating in rounds; CPU time of the looping thread, which is what the
  traced program pays (the tracepoints run in its syscalls). The goal is on that ratio.
* ``trace.reader``: the tracer's own cost on its reader thread (another CPU): draining trace_pipe,
  where the kernel formats every event as text (about 1.7 us a line measured here). The total
  ratios add it (``total_ratio``), and parsing the events into records afterwards
  (``total_ratio_parsed``). Reading trace_pipe_raw (binary) instead would remove most of it.
* ``trace.parse``: text captured from the same loop (or, where tracing is unavailable, a line
  sample the kernel printed), decoded, split and parsed into events, in events per CPU second;
  ``trace.build``: those events into lock and call records.
"""

from __future__ import annotations

import os
import statistics


from mmlab.bench.libc import RealMM, real_unavailable
from mmlab.bench.registry import Goal, Row, Run, benchmark
from mmlab.bench.timing import cpu_ns
from mmlab.flags import MAP_ANONYMOUS, MAP_NORESERVE, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE

RW = PROT_READ | PROT_WRITE
FLAGS = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE
ROUNDS = 5

# Printed by Linux 6.18 (record-tgid on) for the loop below: used when tracing is unavailable.
_SAMPLE = """\
          python-702     (    702) [001] .....   548.225726: sys_mmap(addr: 0, len: 0x1000, prot: 3, flags: 0x4022, fd: 0xffffffffffffffff, off: 0)
          python-702     (    702) [001] .....   548.225727: mmap_lock_start_locking: mm=00000000a7f7556a memcg_id=3683 write=true
          python-702     (    702) [001] .....   548.225727: mmap_lock_acquire_returned: mm=00000000a7f7556a memcg_id=3683 write=true success=true
          python-702     (    702) [001] .....   548.225729: mmap_lock_released: mm=00000000a7f7556a memcg_id=3683 write=true
          python-702     (    702) [001] .....   548.225729: sys_mmap -> 0x7f5a1c0b7000
          python-702     (    702) [001] .....   548.225731: sys_munmap(addr: 0x7f5a1c0b7000, len: 0x1000)
          python-702     (    702) [001] .....   548.225731: mmap_lock_start_locking: mm=00000000a7f7556a memcg_id=3683 write=true
          python-702     (    702) [001] .....   548.225732: mmap_lock_acquire_returned: mm=00000000a7f7556a memcg_id=3683 write=true success=true
          python-702     (    702) [001] .....   548.225733: mmap_lock_acquire_returned: mm=00000000a7f7556a memcg_id=3683 write=false success=true
          python-702     (    702) [001] .....   548.225734: mmap_lock_released: mm=00000000a7f7556a memcg_id=3683 write=false
          python-702     (    702) [001] .....   548.225734: sys_munmap -> 0x0
"""


def _trace_unavailable() -> str:
    from mmlab.trace import unavailable_reason
    return real_unavailable() or unavailable_reason() or ""


def _pairs(real: RealMM, n: int) -> None:
    rmmap, rmunmap = real.raw_mmap, real.raw_munmap
    for _ in range(n):
        rmunmap(rmmap(None, PAGE_SIZE, RW, FLAGS, -1, 0), PAGE_SIZE)


@benchmark("trace", "mmlab.trace: a traced one-page mmap+munmap loop vs the untraced loop; trace_pipe text parse rate", rows=[
    Row("trace.loop_untraced", "us/pair", None, "the loop, no tracing (thread CPU)"),
    Row("trace.loop_traced", "us/pair", None, "the loop inside a Capture (thread CPU)"),
    Row("trace.loop_ratio", "x", Goal("<=", 2), "traced / untraced loop, median of the rounds"),
    Row("trace.reader", "us/pair", None, "the reader thread draining trace_pipe (text formatted by the kernel)"),
    Row("trace.total_ratio", "x", None, "(traced loop + reader) / untraced loop"),
    Row("trace.total_ratio_parsed", "x", None, "(traced loop + reader + parse and build) / untraced loop"),
    Row("trace.parse", "events/s", Goal(">=", 300_000), "trace_pipe text -> events (decode, split, parse; CPU time)"),
    Row("trace.build", "events/s", None, "events -> lock and call records (CPU time)"),
], available=real_unavailable)
def _trace(quick: bool) -> Run:
    from mmlab.trace import Capture
    from mmlab.trace.parse import Parser
    from mmlab.trace.records import build_trace

    n = 2_000 if quick else 5_000
    real = RealMM()
    real.munmap(real.mmap(PAGE_SIZE, RW, FLAGS), PAGE_SIZE)
    why = _trace_unavailable()
    text = _SAMPLE * (n // 2) if why else ""

    def step() -> dict[str, float]:
        nonlocal text
        out: dict[str, float] = {}
        if not why:
            ratios, totals, parsed, un, tr_, rd = [], [], [], [], [], []
            for _ in range(ROUNDS):
                t0 = cpu_ns()
                _pairs(real, n)
                u = cpu_ns() - t0
                cap = Capture(buffer_kb=8192, name="bench", keep_text=True, faults=False).start()
                try:
                    t0 = cpu_ns()
                    _pairs(real, n)
                    t = cpu_ns() - t0
                finally:
                    p0 = cpu_ns()
                    tr = cap.stop()
                    p = cpu_ns() - p0
                if tr is None or tr.lost or len(tr.calls) < 2 * n:
                    raise RuntimeError(f"the traced loop was not captured whole: {tr.summary() if tr else None}")
                r = cap.reader_cpu_ns
                un.append(u)
                tr_.append(t)
                rd.append(r)
                ratios.append(t / u)
                totals.append((t + r) / u)
                parsed.append((t + r + p) / u)
                text = b"".join(cap.text).decode()
            out.update({"trace.loop_untraced": statistics.median(un) / n / 1e3,
                        "trace.loop_traced": statistics.median(tr_) / n / 1e3,
                        "trace.loop_ratio": statistics.median(ratios),
                        "trace.reader": statistics.median(rd) / n / 1e3,
                        "trace.total_ratio": statistics.median(totals),
                        "trace.total_ratio_parsed": statistics.median(parsed)})
        data = text.encode()
        t0 = cpu_ns()
        p = Parser()
        p.feed(data.decode("utf-8", "replace").splitlines(True))
        t1 = cpu_ns()
        build_trace(p.events, p.thread_names(), os.getpid(), p.all_counts())
        t2 = cpu_ns()
        if p.bad or not p.events:
            raise RuntimeError(f"the parser could not read the text: {p.bad_examples}")
        out["trace.parse"] = len(p.events) / ((t1 - t0) / 1e9)
        out["trace.build"] = len(p.events) / ((t2 - t1) / 1e9)
        return out

    return Run(step, notes=[f"tracing unavailable ({why}): parse rate from a kernel-printed sample"] if why else [])



