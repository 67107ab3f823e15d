"""`mmlab bench`: run the benchmark suite, print a table, optionally write JSON.

Exit status: 0 when every measured goal is met, 1 when a goal is not met (or a benchmark broke),
2 for bad arguments. Pending benchmarks (features not on main yet) are listed, never failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Optional

from mmlab.bench import MIN_RUNS, REGISTRY, RowResult, machine_info, run_benchmark, select
from mmlab.bench.runner import DEFAULT_MAX_SPREAD


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run the benchmark suite against the model's performance goals",
                       description="Measure the model: one-page mmap+munmap and 1 GiB populate against "
                       "the real kernel (ctypes, same run), the recorded mmap_sem against the bare "
                       "readerwriterlock, find_vma/mmap scaling to 65,530 vmas, memory per populated "
                       "page. Each benchmark runs a warm-up and at least 5 measured runs and reports "
                       "median, min and max; a spread too wide to trust is flagged.")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="benchmarks to run (globs allowed; default: all). See --list")
    p.add_argument("--quick", action="store_true",
                   help="smaller inner loops (about 2 minutes); long command benchmarks run once")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE ('-': stdout)")
    p.add_argument("--list", action="store_true", help="list the benchmarks, their rows and goals, and exit")
    p.add_argument("--runs", type=int, default=MIN_RUNS, help=f"measured runs per benchmark (>= {MIN_RUNS})")
    p.add_argument("--max-spread", type=float, default=DEFAULT_MAX_SPREAD,
                   help="(max-min)/median above which a row is flagged untrustworthy (default %(default)s)")
    p.set_defaults(func=run)


def _fmt(x: Optional[float]) -> str:
    if x is None:
        return ""
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _verdict(r: RowResult) -> str:
    if r.status == "pending":
        return "[dim]pending[/]"
    if r.status != "ok":
        return f"[yellow]{r.status}[/]"
    if r.met is None:
        return "[dim]ref[/]"
    mark = "[green]met[/]" if r.met else "[bold red]NOT met[/]"
    return mark + ("" if r.trusted else " [yellow]?[/]")


def _list() -> int:
    from mmlab.report.console import console
    from rich.table import Table

    t = Table(title="mmlab benchmarks", show_lines=False)
    for c in ("benchmark", "row", "unit", "goal", "status"):
        t.add_column(c)
    for b in REGISTRY.values():
        first = True
        for r in b.rows:
            t.add_row(b.name if first else "", r.name, r.unit, str(r.goal) if r.goal else "",
                      (b.pending or ("long" if b.long else "ready")) if first else "")
            first = False
        t.add_section()
    console().print(t)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list()
    if args.runs < MIN_RUNS:
        print(f"mmlab bench: --runs must be at least {MIN_RUNS}", file=sys.stderr)
        return 2
    if args.max_spread <= 0:
        print("mmlab bench: --max-spread must be positive", file=sys.stderr)
        return 2
    try:
        chosen = select(args.names)
    except ValueError as e:
        print(f"mmlab bench: {e}", file=sys.stderr)
        return 2
    from mmlab.report.console import console
    from rich.table import Table

    stream = sys.stderr if args.json == "-" else sys.stdout
    out = console(file=stream)
    err = console(stderr=True)
    t0 = time.perf_counter()
    machine = machine_info()
    results: list[RowResult] = []
    with err.status("starting") as status:
        for b in chosen:
            results.extend(run_benchmark(b, quick=args.quick, runs=args.runs, max_spread=args.max_spread,
                                         progress=lambda s: status.update(s)))
    wall = time.perf_counter() - t0

    t = Table(title=f"mmlab bench{' --quick' if args.quick else ''}: median of {args.runs} runs after a warm-up",
              caption=f"{machine.get('cpu', '?')}, {machine.get('cpus')} CPUs, Python {machine['python']}, "
                      f"{machine['uname'].split()[2] if len(str(machine['uname']).split()) > 2 else ''}; "
                      f"{wall:.0f} s. '?': the spread is too wide to trust the verdict.")
    for c, j in (("benchmark", "left"), ("row", "left"), ("unit", "left"), ("median", "right"), ("min", "right"), ("max", "right"),
                 ("runs", "right"), ("goal", "right"), ("verdict", "left"), ("note", "left")):
        t.add_column(c, justify=j)  # type: ignore[arg-type]
    last = None
    for r in results:
        if last is not None and r.benchmark != last:
            t.add_section()
        first = r.benchmark != last
        label = r.name[len(r.benchmark) + 1:] if r.name.startswith(r.benchmark + ".") else r.name
        t.add_row(r.benchmark if first else "", label, r.unit, _fmt(r.median), _fmt(r.min), _fmt(r.max), str(r.runs or ""), r.goal,
                  _verdict(r), r.note)
        last = r.benchmark
    out.print(t)

    if args.json:
        doc = {"mmlab_bench": 1, "quick": args.quick, "runs": args.runs, "max_spread": args.max_spread,
               "wall_s": wall, "machine": machine, "results": [r.as_dict() for r in results]}
        text = json.dumps(doc, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    unmet = [r.name for r in results if r.status == "ok" and r.met is False]
    broken = [r.name for r in results if r.status == "error"]
    if unmet or broken:
        err.print(f"goals not met: {', '.join(unmet) or '-'}; errors: {', '.join(broken) or '-'}")
        return 1
    return 0
