"""Benchmarks of mmlab.trace: what tracing costs a busy mm loop, and how fast the events parse.

* ``trace.loop_*``: one-page mmap+munmap pairs (real kernel, ctypes), untraced, then inside a
  Capture of this process read as binary pages (the default), then inside one read as text,
  alternating in rounds. CPU time: the looping thread's (the tracepoints run in its syscalls) plus
  the reader thread's (draining the buffers, on another CPU); the goal is on that sum, binary.
  ``*_parsed`` adds parsing the events and building the records afterwards.
* ``trace.reader_text``: the text reader's cost: the kernel formats every event as a line of
  trace_pipe text (about 1.7 us a line measured here), which the binary reader does not pay.
* ``trace.parse``: trace_pipe text from the same loop (or, where tracing is unavailable, a line
  sample the kernel printed), decoded, split and parsed into events, in events per CPU second;
  ``trace.parse_raw`` the same events from the binary pages; ``trace.build`` events -> records.
"""

from __future__ import annotations

import os
import statistics
from typing import Any

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


def _traced(real: RealMM, n: int, raw: bool) -> tuple[int, int, int, Any]:
    """(loop CPU ns, reader CPU ns, parse+build CPU ns, the capture) for *n* pairs."""
    from mmlab.trace import Capture
    cap = Capture(buffer_kb=8192, name="bench", keep_text=True, faults=False, raw=raw).start()
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
    return t, cap.reader_cpu_ns, p, cap


@benchmark("trace", "mmlab.trace: a traced one-page mmap+munmap loop vs the untraced loop; parse rates", rows=[
    Row("trace.loop_untraced", "us/pair", None, "the loop, no tracing (thread CPU)"),
    Row("trace.loop_traced", "us/pair", None, "inside a Capture (binary): loop thread + reader thread CPU"),
    Row("trace.loop_ratio", "x", Goal("<=", 2), "traced (loop + reader) / untraced, median of the rounds"),
    Row("trace.loop_ratio_parsed", "x", None, "traced + parsing and building the records / untraced"),
    Row("trace.loop_text_ratio", "x", None, "the same with the text reader (trace_pipe)"),
    Row("trace.reader_text", "us/pair", None, "the text reader's thread: the kernel formats each event"),
    Row("trace.parse", "events/s", Goal(">=", 300_000), "trace_pipe text -> events (decode, split, parse; CPU time)"),
    Row("trace.parse_raw", "events/s", None, "trace_pipe_raw pages -> the same events (CPU time)"),
    Row("trace.build", "events/s", None, "events -> lock and call records (CPU time)"),
], available=real_unavailable)
def _trace(quick: bool) -> Run:
    from mmlab.trace.parse import Parser
    from mmlab.trace.raw import RawParser
    from mmlab.trace.records import build_trace

    n = 2_000 if quick else 5_000
    real = RealMM()
    real.munmap(real.mmap(PAGE_SIZE, RW, FLAGS), PAGE_SIZE)
    why = _trace_unavailable()
    text = _SAMPLE * (n // 2) if why else ""

    def step() -> dict[str, float]:
        nonlocal text
        out: dict[str, float] = {}
        pages: list[bytes] = []
        table = None
        if not why:
            un, tr_, ratios, parsed, text_ratios, text_reader = [], [], [], [], [], []
            for _ in range(ROUNDS):
                t0 = cpu_ns()
                _pairs(real, n)
                u = cpu_ns() - t0
                t, r, p, cap = _traced(real, n, raw=True)
                pages, table = cap.text, cap.parser.table
                tt, tr_text, _, tcap = _traced(real, n, raw=False)
                text = b"".join(tcap.text).decode()
                un.append(u)
                tr_.append(t + r)
                ratios.append((t + r) / u)
                parsed.append((t + r + p) / u)
                text_ratios.append((tt + tr_text) / u)
                text_reader.append(tr_text)
            out.update({"trace.loop_untraced": statistics.median(un) / n / 1e3,
                        "trace.loop_traced": statistics.median(tr_) / n / 1e3,
                        "trace.loop_ratio": statistics.median(ratios),
                        "trace.loop_ratio_parsed": statistics.median(parsed),
                        "trace.loop_text_ratio": statistics.median(text_ratios),
                        "trace.reader_text": statistics.median(text_reader) / n / 1e3})
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
        if pages and table is not None:
            rp = RawParser(table)
            t0 = cpu_ns()
            for pg in pages:
                rp.feed_page(pg)
            t1 = cpu_ns()
            if rp.bad or len(rp.events) < len(p.events) // 2:
                raise RuntimeError(f"the binary reader lost events: {len(rp.events)} vs {len(p.events)} from text")
            out["trace.parse_raw"] = len(rp.events) / ((t1 - t0) / 1e9)
        return out

    return Run(step, notes=[f"tracing unavailable ({why}): parse rate from a kernel-printed sample"] if why else [])
