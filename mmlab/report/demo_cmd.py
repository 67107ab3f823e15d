"""`mmlab demo`: one quick look at the problem -- a MAP_POPULATE under each kernel profile while a
faulting thread and an mmap/munmap thread run beside it, with their worst waits."""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any, Optional

from mmlab import (MAP_ANONYMOUS, MAP_POPULATE, MAP_PRIVATE, MM, PROT_READ, PROT_WRITE,
                   DEFAULT_COSTS, Costs, parse_kernels, set_task_name)
from mmlab.report.costs_arg import add_costs_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="a 10-second look at populate stalls under each kernel",
                       description="Run one anonymous MAP_POPULATE per kernel profile while a reader "
                       "thread faults pages and a writer thread maps and unmaps one page, and print "
                       "each thread's worst wait.")
    p.add_argument("--kernel", default="v3.7,v3.9,v6.18,bounded", help="comma-separated profiles")
    p.add_argument("--size", type=int, default=128, help="populate size in MiB (default 128)")
    p.add_argument("--time-scale", type=float, default=0.5, help="cost multiplier (default 0.5)")
    p.add_argument("--perfetto", metavar="FILE.json", help="write each kernel's run (calls, lock waits and "
                   "holds per thread) as Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing)")
    add_costs_argument(p)
    p.set_defaults(func=run)


def demo_once(kernel: str, size_mib: int, time_scale: float,
              events: Optional[list[dict[str, Any]]] = None, costs: Costs = DEFAULT_COSTS) -> dict[str, float]:
    """One run; with *events*, the run's calls and lock records are appended to it as trace
    events (mmlab.report.perfetto), one process per run."""
    import sys
    sys.setswitchinterval(0.0005)  # as the measurements on the real kernel did
    mm = MM(kernel, costs.scaled(time_scale))
    stop = threading.Event()
    start = threading.Barrier(3)
    worst = {"fault": 0.0, "mmap+munmap": 0.0}
    region = mm.mmap(0, 64 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)

    def reader() -> None:
        set_task_name("reader")
        start.wait()
        a = region
        while not stop.is_set():
            t = time.perf_counter()
            mm.touch(a, write=True)
            worst["fault"] = max(worst["fault"], time.perf_counter() - t)
            a = a + 4096 if a + 4096 < region + (64 << 20) else region
            if a == region:
                mm.madvise(region, 64 << 20, 4)

    def writer() -> None:
        set_task_name("writer")
        start.wait()
        while not stop.is_set():
            t = time.perf_counter()
            x = mm.mmap(0, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS)
            mm.munmap(x, 4096)
            worst["mmap+munmap"] = max(worst["mmap+munmap"], time.perf_counter() - t)
            time.sleep(0.0005)

    ts = [threading.Thread(target=reader), threading.Thread(target=writer)]
    for t in ts:
        t.start()
    set_task_name("populator")
    start.wait()
    t0 = time.perf_counter()
    try:
        mm.mmap(0, size_mib << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE)
    finally:
        stop.set()
        for t in ts:
            t.join()
    out = {k: v * 1e3 for k, v in worst.items()}
    out["populate"] = (time.perf_counter() - t0) * 1e3
    if events is not None:
        from mmlab.report.perfetto import model_events
        events.extend(model_events(mm, f"{kernel}: MAP_POPULATE {size_mib} MiB", pid=len({e["pid"] for e in events}) + 1))
    return out


def run(args: argparse.Namespace) -> int:
    from mmlab.report.console import console
    from rich.table import Table

    try:
        kernels = parse_kernels(args.kernel)
    except ValueError as e:
        print(f"mmlab demo: {e}")
        return 2
    t = Table(title=f"MAP_POPULATE of {args.size} MiB anonymous memory (wall-clock ms, time scale {args.time_scale})")
    for c in ("kernel", "populate ms", "reader fault worst ms", "writer mmap+munmap worst ms"):
        t.add_column(c, justify="right")
    events: Optional[list[dict[str, Any]]] = [] if args.perfetto else None
    for k in kernels:
        r = demo_once(k.name, args.size, args.time_scale, events, args.costs.costs)
        t.add_row(k.name, f"{r['populate']:.1f}", f"{r['fault']:.2f}", f"{r['mmap+munmap']:.2f}")
    con = console()
    con.print(args.costs.header, highlight=False)
    con.print(t)
    if args.perfetto and events is not None:
        from mmlab.report.perfetto import write_events
        n = write_events(args.perfetto, events, {"source": "mmlab demo (model)"})
        print(f"wrote {args.perfetto} ({n:,} trace events; open in ui.perfetto.dev)")
    return 0
