"""`mmlab stress [FILE...]`: run stress suites (default: every stress/*.toml) and check their expectations.

Every file is loaded and validated before anything runs: a bad suite exits 2 naming file and
line. While suites run, a live dashboard shows per suite its progress, calls per second, worst
mmap_sem wait so far and the outcome counts (plain lines when stderr is not a terminal); a
summary table follows. Exit status: 0 every expectation held, 1 a violation, 2 a bad suite or
argument, 3 a hang (thread stacks and lock state printed), 130 interrupted (what was measured is
printed).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from mmlab.harness.live import DEFAULT_PERIOD_MS
from mmlab.harness.suite import Suite, SuiteError, load_suite
from mmlab.report.costs_arg import add_costs_argument

if TYPE_CHECKING:
    from mmlab.clock import Costs
    from mmlab.harness.dilation import Dilation

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "stress"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stress", help="run the stress suites (default: every suite in stress/)",
                       description="Run declarative stress suites (TOML) -- race sections graded by the "
                       "oracle and multithreaded workloads under the stall watchdog -- on each kernel "
                       "profile, and check each suite's expectations (outcomes that must never appear, "
                       "known bugs that must be reproduced, stall bounds).")
    p.add_argument("files", nargs="*", metavar="FILE", help="suite files or directories (default: stress/)")
    p.add_argument("--kernel", help="run only these kernels of each suite (comma-separated)")
    p.add_argument("--time-scale", type=float, help="override every suite's time_scale")
    p.add_argument("--dilation", default="off", metavar="auto|K|off",
                   help="the workloads' clock (see `mmlab latency --help`): modelled costs run K times slower "
                   "on the real clock and times are divided by K, so interpreter time counts 1/K; auto: K from "
                   "the measured per-call overhead with `mmlab latency --quick`'s targets (8 us a call, K >= 4); "
                   "off (default): K=1, the interpreter's time counts in full -- a suite's duration is real "
                   "seconds, so a dilated workload covers 1/K of it. The residual is printed either way")
    p.add_argument("--seed", type=int, help="override every suite's seed")
    add_costs_argument(p)
    p.add_argument("--json", metavar="FILE", help="write results as JSON")
    p.add_argument("--list", action="store_true", help="validate and list the suites, run nothing")
    p.add_argument("--check-live", action="store_true",
                   help="also run the race oracle continuously under mmap_sem (read) during every round and "
                   "workload: a FORBIDDEN state a later call erased still counts")
    p.add_argument("--check-live-ms", type=float, default=DEFAULT_PERIOD_MS, metavar="MS",
                   help=f"period of the live checks (default {DEFAULT_PERIOD_MS:g} ms)")
    p.set_defaults(func=run)


def _paths(args: argparse.Namespace) -> list[Path]:
    items = [Path(f) for f in args.files] or [DEFAULT_DIR]
    out: list[Path] = []
    for it in items:
        if it.is_dir():
            out.extend(sorted(it.glob("*.toml")))
        else:
            out.append(it)
    return out


def _fail(msg: str) -> int:
    print(f"mmlab stress: error: {msg}", file=sys.stderr)
    return 2


def _dilation(text: str, costs: "Costs") -> "Dilation":
    """--dilation: auto (`mmlab latency --quick`'s targets), K >= 1, or off (K=1); the per-call
    overhead is measured in every case, so the residual can be printed."""
    from mmlab.harness.dilation import HANDOFF_TARGET_NS, RESIDUAL_TARGET_NS, choose_dilation
    from mmlab.report.latency_cmd import parse_dilation
    return choose_dilation(costs, k=parse_dilation(text), target_ns=8 * RESIDUAL_TARGET_NS,
                           handoff_target_ns=8 * HANDOFF_TARGET_NS)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    paths = _paths(args)
    if not paths:
        return _fail(f"no suites found in {', '.join(args.files) or str(DEFAULT_DIR)}")
    suites: list[Suite] = []
    for p in paths:
        try:
            suites.append(load_suite(p))
        except SuiteError as e:
            return _fail(str(e))
    if args.time_scale is not None and not args.time_scale >= 0:
        return _fail("--time-scale must be >= 0")
    if not args.check_live_ms > 0:
        return _fail("--check-live-ms must be positive")
    for i, s in enumerate(suites):
        if args.kernel:
            want = [k.strip() for k in args.kernel.split(",") if k.strip()]
            unknown = [k for k in want if k not in s.kernels]
            if unknown and len(suites) == 1:
                return _fail(f"{s.path}: suite does not run {', '.join(unknown)} (kernels: {', '.join(s.kernels)})")
            s = dataclasses.replace(s, kernels=tuple(k for k in s.kernels if k in want))
        if args.time_scale is not None:
            s = dataclasses.replace(s, time_scale=args.time_scale)
        if args.seed is not None:
            s = dataclasses.replace(s, seed=args.seed)
        suites[i] = dataclasses.replace(s, costs=args.costs.costs)
    try:
        dil = _dilation(args.dilation, args.costs.costs)
    except ValueError as e:
        return _fail(str(e))
    suites = [dataclasses.replace(s, dilation=dil.k) for s in suites]
    if args.list:
        for s in suites:
            print(f"{s.path}: {s.name} -- {s.description} (kernels {', '.join(s.kernels)}; "
                  f"{len(s.races)} race sections, {sum(t.count for t in s.tasks)} tasks)")
        return 0
    print(f"mmlab stress: {len(suites)} suite(s); {args.costs.header}", file=sys.stderr, flush=True)
    print(f"mmlab stress: workload clock: {dil.text()}", file=sys.stderr, flush=True)
    return _run(suites, args.json, args.check_live_ms if args.check_live else 0.0, args.costs.as_dict())


def _run(suites: list[Suite], json_path: Optional[str], check_live_ms: float = 0.0,
         costs: Optional[dict] = None) -> int:
    from mmlab.harness.stress import Live, SuiteResult, run_suite

    sys.setswitchinterval(0.0005)
    from mmlab.report.console import console
    err = console(stderr=True)
    out = console()
    lives = [Live(s) for s in suites]
    results: list[SuiteResult] = []
    stop = threading.Event()
    interrupted = False
    display = None
    if err.is_terminal:
        from rich.live import Live as RichLive
        display = RichLive(_Dashboard(lives), console=err, refresh_per_second=4, transient=False)
        display.start()
    try:
        for s, live in zip(suites, lives):
            if interrupted:
                break
            if display is None:
                print(f"suite {s.name} ({s.path}): kernels {', '.join(s.kernels)}", file=sys.stderr, flush=True)
            res = run_suite(s, live, stop, check_live_ms=check_live_ms)
            results.append(res)
            if display is None:
                o = res.outcome_counts()
                print(f"suite {s.name}: {res.status} in {res.elapsed_s:.1f} s, {live.calls_now} calls, worst wait "
                      f"{live.worst_wait_ns / 1e6:.1f} ms, OK {o['OK']} INTERESTING {o['INTERESTING']} "
                      f"FORBIDDEN {o['FORBIDDEN']}", file=sys.stderr, flush=True)
            if res.interrupted:
                interrupted = True
            if res.hang:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if display is not None:
            display.stop()
    _summary(out, results)
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"costs": costs, "suites": [r.as_dict() for r in results], "interrupted": interrupted,
                       "check_live_ms": check_live_ms or None}, f, indent=1,
                      default=str)
    if any(r.hang for r in results):
        for r in results:
            if r.hang:
                print(f"HANG in suite {r.suite.name}:\n{r.hang}", file=sys.stderr)
        return 3
    if interrupted:
        return 130
    return 1 if any(r.violations for r in results) else 0


class _Dashboard:
    """The live table: rebuilt from the runners' Live objects at every refresh."""

    def __init__(self, lives) -> None:
        self.lives = lives

    def __rich__(self):
        from rich.table import Table
        t = Table(title="mmlab stress", expand=False)
        for c in ("suite", "progress", "now", "calls/s", "worst wait ms", "OK", "INTERESTING", "FORBIDDEN", "status"):
            t.add_column(c, justify="left" if c in ("suite", "now", "status") else "right", no_wrap=True)
        for lv in self.lives:
            o = lv.outcomes
            started = lv.phase != "waiting"
            t.add_row(lv.suite.name, f"{lv.done}/{lv.total}" if lv.total else "-",
                      (lv.phase[:48] if lv.status == "running" else "") if started else "",
                      f"{lv.calls_per_s():.0f}" if started else "-", f"{lv.worst_wait_ns / 1e6:.1f}",
                      str(o["OK"]), str(o["INTERESTING"]),
                      f"[bold red]{o['FORBIDDEN']}[/]" if o["FORBIDDEN"] else "0",
                      _status_markup(lv.status if started else "waiting"))
        return t


def _status_markup(s: str) -> str:
    return {"HELD": "[green]held[/]", "VIOLATED": "[bold red]VIOLATED[/]", "HANG": "[bold red]HANG[/]",
            "INTERRUPTED": "[yellow]interrupted[/]"}.get(s, s)


def _summary(out, results) -> None:
    from rich.table import Table
    t = Table(title="stress suites")
    for c in ("suite", "kernel", "race rounds", "window hits", "OK", "INTERESTING", "FORBIDDEN", "wrong pages",
              "workload calls", "worst wait ms", "populate ms", "alone ms", "slowdown", "status"):
        t.add_column(c, justify="left" if c in ("suite", "kernel", "status") else "right", no_wrap=True)
    for r in results:
        first = True
        for run in r.runs:
            rounds = sum(c.rounds for _i, c in run.cells)
            hits = sum(c.window_hits for _i, c in run.cells)
            o = {g: sum(c.outcomes[g] for _i, c in run.cells) for g in ("OK", "INTERESTING", "FORBIDDEN")}
            wrong = sum(c.wrong_pages for _i, c in run.cells)
            wl = run.workload
            if wl is not None and wl.verdict is not None:
                o[wl.verdict.outcome] += 1
                wrong += wl.verdict.wrong_pages
            bad = any(v.startswith(run.kernel + ":") for v in r.violations)
            t.add_row(r.suite.name if first else "", run.kernel, str(rounds) if run.cells else "-",
                      str(hits) if run.cells else "-", str(o["OK"]), str(o["INTERESTING"]),
                      f"[bold red]{o['FORBIDDEN']}[/]" if o["FORBIDDEN"] else "0", str(wrong),
                      str(wl.calls) if wl else "-", f"{wl.worst_wait_ms:.1f}" if wl else "-",
                      f"{wl.populate_ms:.1f}" if wl and wl.populate_ms is not None else "-",
                      f"{wl.alone_ms:.1f}" if wl and wl.alone_ms is not None else "-",
                      f"{wl.slowdown:.2f}x" if wl and wl.slowdown is not None else "-",
                      "[bold red]VIOLATED[/]" if bad else "[green]held[/]")
            first = False
        t.add_section()
    out.print(t)
    for r in results:
        for why in r.skipped.values():
            out.print(f"[yellow]SKIPPED[/] {r.suite.name}: {why}", highlight=False)
        for v in r.violations:
            out.print(f"[bold red]VIOLATION[/] {r.suite.name}: {v}", highlight=False)
        for d in r.details[:3]:
            out.print(d, highlight=False, markup=False)
        for run in r.runs:
            wl = run.workload
            if wl is not None and wl.slowdown is not None:
                out.print(f"{r.suite.name} {run.kernel}: worst wait {wl.worst_wait_ms:.2f} ms "
                          f"({wl.worst_wait_where or '-'}), populate {wl.slowdown:.2f}\u00d7 slower than alone "
                          f"({wl.populate_ms:.1f} vs {wl.alone_ms:.1f} ms, median calls)", highlight=False)
        wls = [run.workload for run in r.runs if run.workload is not None and run.workload.slowdown is not None]
        if wls:
            k = wls[0].dilation
            out.print(f"workload times are modelled time on a clock dilated k={k:g}"
                      + (" (undilated: the interpreter's time counts in full; --dilation auto divides it by k)"
                         if k == 1 else " (the interpreter's time counts 1/k)")
                      + "; the residual per call is printed at the start", style="dim", highlight=False)
        status = {"HELD": "[green]every expectation held[/]", "VIOLATED": "[bold red]expectations violated[/]",
                  "HANG": "[bold red]hang[/]", "INTERRUPTED": "[yellow]interrupted: partial results[/]"}[r.status]
        out.print(f"{r.suite.name}: {status} ({r.elapsed_s:.1f} s)")
