"""`mmlab demo`: one quick look at the problem -- a MAP_POPULATE under each kernel profile while a
faulting thread and an mmap/munmap thread run beside it, with their worst waits."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any, Optional

from mmlab import (MAP_ANONYMOUS, MAP_POPULATE, MAP_PRIVATE, MM, PROT_READ, PROT_WRITE,
                   DEFAULT_COSTS, Costs, parse_kernels, set_task_name)
from mmlab.clock import RealClock
from mmlab.report.costs_arg import add_costs_argument


def register(sub: argparse._SubParsersAction) -> None:
    from mmlab.report.latency_cmd import add_time_args

    p = sub.add_parser("demo", help="a 10-second look at populate stalls under each kernel",
                       description="Run one anonymous MAP_POPULATE per kernel profile while a reader "
                       "thread faults pages and a writer thread maps and unmaps one page, and print "
                       "each thread's worst wait; then the same populate alone, and its slowdown beside "
                       "the victims (what bounding the writer costs the populating thread). Times are "
                       "modelled time on a dilated clock (see `mmlab latency --help`), the residual "
                       "printed below the table.")
    p.add_argument("--kernel", default="v3.7,v3.9,v6.18,bounded", help="comma-separated profiles")
    p.add_argument("--size", type=int, default=128, help="populate size in MiB (default 128)")
    p.add_argument("--time-scale", type=float, default=0.5, help="cost multiplier (default 0.5)")
    p.add_argument("--perfetto", metavar="FILE.json", help="write each kernel's run (calls, lock waits and "
                   "holds per thread) as Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing)")
    add_costs_argument(p)
    add_time_args(p)
    p.set_defaults(func=run)


def demo_once(kernel: str, size_mib: int, time_scale: float,
              events: Optional[list[dict[str, Any]]] = None, costs: Costs = DEFAULT_COSTS,
              k: float = 1.0, victims: bool = True) -> dict[str, float]:
    """One run on a clock dilated *k*-fold (RealClock(dilation=k)); every time returned is the
    clock's (modelled) ms. Without *victims* the populate runs alone. With *events*, the run's
    calls and lock records are appended to it as trace events (mmlab.report.perfetto), one
    process per run."""
    import sys
    sys.setswitchinterval(0.0005)  # as the measurements on the real kernel did
    mm = MM(kernel, costs.scaled(time_scale), RealClock(dilation=k, carry_credit=k > 1))
    now = mm.clock.now_ns
    gap_s = mm.clock.real_s(500_000)  # the writer's pause between pairs: 0.5 ms of modelled time
    stop = threading.Event()
    start = threading.Barrier(3 if victims else 1)
    worst = {"fault": 0.0, "mmap+munmap": 0.0}
    region = mm.mmap(0, 64 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)

    # each victim makes one call before the populate starts (the barrier): the reader's region has
    # its anon_vma, so its faults take the per-VMA lock where the profile has one, as they would
    # in a program that was already running -- not the first-fault trylock racing the populate
    def reader() -> None:
        set_task_name("reader")
        mm.touch(region, write=True)
        start.wait()
        a = region
        while not stop.is_set():
            t = now()
            mm.touch(a, write=True)
            worst["fault"] = max(worst["fault"], now() - t)
            a = a + 4096 if a + 4096 < region + (64 << 20) else region
            if a == region:
                mm.madvise(region, 64 << 20, 4)

    def writer() -> None:
        set_task_name("writer")
        mm.munmap(mm.mmap(0, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS), 4096)
        start.wait()
        while not stop.is_set():
            t = now()
            x = mm.mmap(0, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS)
            mm.munmap(x, 4096)
            worst["mmap+munmap"] = max(worst["mmap+munmap"], now() - t)
            time.sleep(gap_s)

    ts = [threading.Thread(target=reader), threading.Thread(target=writer)] if victims else []
    for t in ts:
        t.start()
    set_task_name("populator")
    start.wait()
    t0 = now()
    try:
        mm.mmap(0, size_mib << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE)
        t1 = now()
    finally:
        stop.set()
        for t in ts:
            t.join()
    out = {name: ns / 1e6 for name, ns in worst.items()}
    out["populate"] = (t1 - t0) / 1e6
    if events is not None:
        from mmlab.report.perfetto import model_events
        events.extend(model_events(mm, f"{kernel}: MAP_POPULATE {size_mib} MiB", pid=len({e["pid"] for e in events}) + 1))
    return out


def run(args: argparse.Namespace) -> int:
    from mmlab.clock import hooks
    from mmlab.report.console import console
    from mmlab.report.latency_cmd import make_dilation
    from rich.table import Table

    try:
        kernels = parse_kernels(args.kernel)
        if args.size < 1 or not args.time_scale > 0:
            raise ValueError("--size must be >= 1 and --time-scale > 0")
        dil = make_dilation(args, args.time_scale)
    except ValueError as e:
        print(f"mmlab demo: error: {e}", file=sys.stderr)
        return 2
    t = Table(title=f"MAP_POPULATE of {args.size} MiB anonymous memory (modelled ms, time scale {args.time_scale})")
    for c in ("kernel", "populate ms", "alone ms", "slowdown", "reader fault worst ms", "writer mmap+munmap worst ms"):
        t.add_column(c, justify="right")
    events: Optional[list[dict[str, Any]]] = [] if args.perfetto else None
    ks: list[float] = []
    con = console()
    try:
        for k in kernels:
            with con.status(f"{k.name}: measuring the interpreter (time dilation)"):
                d = dil.recalibrated()  # type: ignore[attr-defined]
            ks.append(d.k)
            with con.status(f"{k.name}: {args.size} MiB populate beside the victims, then alone (k={d.k:.1f})"):
                r = demo_once(k.name, args.size, args.time_scale, events, args.costs.costs, k=d.k)
                alone = demo_once(k.name, args.size, args.time_scale, None, args.costs.costs, k=d.k, victims=False)
            t.add_row(k.name, f"{r['populate']:.1f}", f"{alone['populate']:.1f}",
                      f"{r['populate'] / alone['populate']:.2f}x", f"{r['fault']:.2f}", f"{r['mmap+munmap']:.2f}")
    finally:
        hooks.syscall_burn_ns = 0
    con.print(args.costs.header, highlight=False)
    con.print(t)
    con.print(f"'alone': the same populate with no reader or writer; 'slowdown': populate / alone. Times are the "
              f"clock's modelled time, dilated k {min(ks):.1f}-{max(ks):.1f}: the interpreter's time counts 1/k "
              f"(residual about {dil.overhead_ns / min(ks) / 1e3:.2f} us per call); "  # type: ignore[attr-defined]
              "the victims' worst waits are whole calls (lock wait and work)", style="dim", highlight=False)
    if args.perfetto and events is not None:
        from mmlab.report.perfetto import write_events
        n = write_events(args.perfetto, events, {"source": "mmlab demo (model)"})
        print(f"wrote {args.perfetto} ({n:,} trace events; open in ui.perfetto.dev)")
    return 0
