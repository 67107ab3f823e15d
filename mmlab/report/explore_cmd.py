"""`mmlab explore` and `mmlab replay`: controlled exploration of race scenarios, and exact replay.

explore runs each kernel/populator/racer scenario -- given on the command line, or the [[race]]
sections of stress suite files -- under a strategy (PCT by default) until the first failure or the
iteration budget; a failure is shrunk, printed as a numbered interleaving, given a replay token,
and replayed to show it reproduces. With a suite, its expectations decide: an outcome it says must
never appear is the failure, and a known bug it says must be reproduced has to show up (and is
printed the same way). replay re-runs a token's execution. Every time shown is virtual (the
VirtualClock of controlled mode) unless it says "wall".
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from typing import Any, Optional

from mmlab.harness.populators import POPULATORS
from mmlab.harness.sizes import parse_size
from mmlab.kernels import KERNELS, parse_kernels
from mmlab.report.costs_arg import add_costs_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explore", help="controlled scheduling of a race scenario: PCT, random walk or bounded DFS",
        description="Run a populator and a racer as real task threads under a controlled scheduler, one "
        "at a time, over many schedules. On the first FORBIDDEN outcome, deadlock or stall over the bound, "
        "print it, its replay token, the shrunk interleaving, and replay it. Times are virtual.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  mmlab explore --kernel v3.9 --populator populate-anon --seed 1\n"
               "  mmlab explore stress/populate-race.toml --iterations 300\n"
               "  mmlab explore --kernel v3.7,v3.9-rc1,bounded --populator populate-file,populate-anon "
               "--iterations 10000\n  mmlab explore --kernel v3.7 --stall-ms 1\n"
               "exit status: 0 nothing found, 1 a failure found, 2 bad arguments, 3 a hang, 130 interrupted")
    p.add_argument("suites", nargs="*", metavar="SUITE",
                   help="stress suite files: explore their [[race]] sections against their expectations")
    p.add_argument("--kernel", default=None,
                   help="comma-separated kernel specs, or 'all' (default v3.9; with a suite: a filter)")
    p.add_argument("--populator", default=None,
                   help=f"comma-separated, or 'all' (default populate-file; with a suite: a filter); "
                   f"known: {', '.join(POPULATORS)}")
    p.add_argument("--racer", default=None,
                   help="comma-separated racers of mmlab/harness/racers.py, or 'all' (default munmap-mmap; "
                   "with a suite: a filter)")
    p.add_argument("--size", default="1M", help="populated size, e.g. 1M, 256K (default 1M)")
    p.add_argument("--strategy", default="pct", choices=("pct", "random", "dfs"))
    p.add_argument("--iterations", type=int, default=1000, help="executions per scenario (default 1000)")
    p.add_argument("--seed", type=int, default=None, help="seed (default: a random one, printed)")
    p.add_argument("--depth", type=int, default=2, help="PCT bug depth d (default 2)")
    p.add_argument("--max-preemptions", type=int, default=2, help="DFS preemption bound (default 2)")
    p.add_argument("--max-steps", type=int, default=20_000, help="steps per execution before a livelock report")
    p.add_argument("--stall-ms", type=float, default=0.0,
                   help="report a STALL when an mmap_sem wait exceeds this (virtual ms; default off)")
    p.add_argument("--time-scale", type=float, default=None,
                   help="cost multiplier (default 1.0, or the suite's)")
    add_costs_argument(p)
    p.add_argument("--reproduce", type=int, default=10, help="replays of a failure's token (default 10)")
    p.add_argument("--no-shrink", action="store_true", help="print the failing schedule as found")
    p.add_argument("--keep-going", action="store_true", help="count outcomes over every iteration")
    p.add_argument("--trace", action="store_true", help="also print every schedule point of the failure")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.set_defaults(func=run_explore)

    r = sub.add_parser(
        "replay", help="re-run the execution a replay token names, exactly",
        description="Re-run the execution recorded in TOKEN (printed by `mmlab explore`) and show its "
        "interleaving. A replay that stops matching the recording is reported at the first differing step.",
        epilog="exit status: 0 the execution is clean, 1 it fails (reproduced), 2 bad token or divergence")
    r.add_argument("token")
    r.add_argument("--trace", action="store_true", help="print every schedule point")
    r.add_argument("--times", type=int, default=1, help="replay this many times (default 1)")
    r.set_defaults(func=run_replay)


def _console() -> Any:
    from rich.console import Console
    c = Console(highlight=False, soft_wrap=True, markup=False)
    if not c.is_terminal:
        c.width = max(c.width, 200)  # tables in a log or CI need no wrapping
    return c


def _err(msg: str) -> int:
    print(f"mmlab: error: {msg}", file=sys.stderr)
    return 2


class Cell:
    """One scenario to explore and what must hold for it."""

    def __init__(self, scenario: Any, never: tuple[str, ...] = (), wanted: tuple[str, ...] = (),
                 group: tuple = ()) -> None:
        self.scenario = scenario
        self.never = never
        self.wanted = wanted  # known bugs: each must show up in some cell of the group
        self.group = group  # (suite, kernel, expectation): the cells a known bug may show up in


def _names(spec: Optional[str], default: str, every: list[str]) -> list[str]:
    spec = default if spec is None else spec
    return list(every) if spec.strip() == "all" else [x.strip() for x in spec.split(",") if x.strip()]


def _cells(args: argparse.Namespace, seed: int) -> list[Cell]:
    from mmlab.harness.racers import RACERS, get_racers
    from mmlab.sched.scenario import RaceScenario
    stall = int(args.stall_ms * 1e6)
    ts = 1.0 if args.time_scale is None else args.time_scale
    if not args.suites:
        kspec = args.kernel or "v3.9"
        kernels = list(KERNELS) if kspec.strip() == "all" else [k.name for k in parse_kernels(kspec)]
        pops = _names(args.populator, "populate-file", list(POPULATORS))
        racers = [r.name for r in get_racers(args.racer or "munmap-mmap")]
        size = parse_size(args.size)
        return [Cell(RaceScenario(k, p, r, size, ts, stall, racer_seed=seed, costs=args.costs.costs))
                for k in kernels for p in pops for r in racers]
    from mmlab.harness.suite import load_suite
    want_k = set(_names(args.kernel, "all", list(KERNELS))) if args.kernel else None
    want_p = set(_names(args.populator, "all", list(POPULATORS))) if args.populator else None
    want_r = set(_names(args.racer, "all", list(RACERS))) if args.racer else None
    for f, names in (("kernel", want_k), ("populator", want_p), ("racer", want_r)):
        known = {"kernel": KERNELS, "populator": POPULATORS, "racer": RACERS}[f]
        bad = sorted(n for n in names or () if n not in known)
        if bad:
            raise ValueError(f"unknown {f} {bad[0]!r}; known: {', '.join(known)}")
    cells = []
    for path in args.suites:
        suite = load_suite(path)
        tsc = suite.time_scale if args.time_scale is None else args.time_scale
        for sec in suite.races:
            for k in sec.kernels or suite.kernels:
                if want_k is not None and k not in want_k:
                    continue
                e = suite.expect_for(k, sec)
                st = int((e.stall_over_ms if "stall" in e.reproduce else e.stall_ms) or 0) * 1_000_000 or stall
                for pop in sec.populators:
                    for r in sec.racers:
                        if (want_p is None or pop in want_p) and (want_r is None or r in want_r):
                            cells.append(Cell(RaceScenario(k, pop, r, sec.size, tsc, st, racer_seed=seed,
                                                           costs=args.costs.costs),
                                              tuple(e.never), tuple(e.reproduce), (suite.name, k, id(e))))
    if not cells:
        raise ValueError("the suites have no [[race]] cell that passes the --kernel/--populator/--racer filters")
    return cells


def run_explore(args: argparse.Namespace) -> int:
    from mmlab.sched.explore import explore, never_violated
    for name, v, lo in (("--iterations", args.iterations, 1), ("--depth", args.depth, 1),
                        ("--max-preemptions", args.max_preemptions, 0), ("--max-steps", args.max_steps, 10),
                        ("--reproduce", args.reproduce, 0)):
        if v < lo:
            return _err(f"{name} must be >= {lo}")
    if (args.time_scale is not None and args.time_scale < 0) or args.stall_ms < 0:
        return _err("--time-scale and --stall-ms must be >= 0")
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    try:
        cells = _cells(args, seed)
    except ValueError as e:  # SuiteError is one: file and line
        return _err(str(e))
    con = _console()
    strat = {"pct": f"PCT depth {args.depth}", "random": "random walk",
             "dfs": f"DFS, preemption bound {args.max_preemptions}"}[args.strategy]
    con.print(f"mmlab explore: {strat}, seed {seed}, up to {args.iterations} executions per scenario; "
              f"times are virtual (VirtualClock), rates are wall-clock; {args.costs.header}")
    results = []
    status = 0
    seen: dict[tuple, set[str]] = {}  # group -> known bugs reproduced in it so far
    try:
        for c in cells:
            sc = c.scenario
            got = seen.setdefault(c.group, set())
            wanted = tuple(w for w in c.wanted if w not in got)
            r = explore(sc, args.strategy, args.iterations, seed, depth=args.depth,
                        max_preemptions=args.max_preemptions, max_steps=args.max_steps,
                        do_shrink=not args.no_shrink, reproduce=args.reproduce,
                        stop_on_failure=not args.keep_going,
                        violation=never_violated(c.never) if args.suites else None, wanted=wanted,
                        stop_when_reproduced=bool(wanted) and not c.never and not args.keep_going,
                        progress=_progress(con, sc))
            got.update(r.reproductions)
            results.append(r)
            _print_result(con, r, args)
            if r.finding is not None:
                status = max(status, 3 if r.finding.outcome.verdict == "HANG" else 1)
        for c in cells:
            missing = [w for w in c.wanted if w not in seen[c.group]]
            if missing and c.group not in seen.get(("reported",), set()):
                seen.setdefault(("reported",), set()).add(c.group)  # type: ignore[arg-type]
                n = sum(1 for d in cells if d.group == c.group)
                con.print(f"EXPECTATION NOT MET: {c.group[0]}: {c.group[1]}: {', '.join(missing)} not reproduced "
                          f"in any of its {n} scenario(s) ({args.iterations} executions each at most)",
                          style="bold red")
                status = max(status, 1)
    except KeyboardInterrupt:
        con.print("\ninterrupted; results so far:")
        _summary(con, results)
        return 130
    _summary(con, results)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"seed": seed, "strategy": args.strategy, "costs": args.costs.as_dict(),
                       "results": [_as_json(r) for r in results]},
                      fh, indent=2)
    return status


def _progress(con: Any, sc: Any) -> Any:
    if not con.is_terminal:
        return None

    def cb(r: Any) -> None:
        con.print(f"  {sc.title()}: {r.executions} executions, {dict(r.counts)}", end="\r")
    return cb


def _print_result(con: Any, r: Any, args: argparse.Namespace) -> None:
    sc = r.scenario
    for n in getattr(sc, "notes", []):
        con.print(f"  note: {n}")
    g = r.pct_guarantee()
    f = r.finding
    if f is None:
        tail = " (the search is exhausted)" if r.exhausted else ""
        con.print(f"{sc.title()}: no failure in {r.executions} executions{tail}: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items())), style="bold")
    else:
        out = f.shrunk.outcome if f.shrunk is not None else f.outcome
        con.print(f"{sc.title()}: {out.verdict} ({out.what}) at execution {f.iteration} of {args.iterations}",
                  style="bold red")
        _print_finding(con, f, args)
    for item, rf in r.reproductions.items():
        con.print(f"  expected: {item} reproduced at execution {rf.iteration} (a known bug the suite requires)",
                  style="bold")
        _print_finding(con, rf, args)
    if g is not None:
        n, k, d, p = g
        miss = (1 - p) ** r.executions
        con.print(f"  PCT: n={n} tasks, k={k} decision steps, depth d={d}: each execution finds a depth-{d} bug "
                  f"with probability >= 1/(n*k^(d-1)) = {p:.3g}"
                  + (f"; {r.executions} clean executions miss one with probability <= {miss:.3g}" if f is None else ""))
    ctl = r.points / r.run_s if r.run_s else 0.0
    con.print(f"  {r.points} schedule points in {r.wall_s:.2f} s wall = {r.points_per_s:,.0f} points/s "
              f"({ctl:,.0f}/s inside controlled runs; the rest builds the model and runs the oracle)")


def _print_finding(con: Any, f: Any, args: argparse.Namespace) -> None:
    from mmlab.sched.trace import format_events, format_steps, group_steps
    out = f.shrunk.outcome if f.shrunk is not None else f.outcome
    for line in out.detail.splitlines():
        con.print(f"    {line}")
    ex = f.shown
    steps = group_steps(ex)
    if f.shrunk is not None:
        s = f.shrunk
        con.print(f"  shrunk interleaving: {len(steps)} steps, {ex.preemptions} preemption(s), "
                  f"{ex.points} schedule points (found: {len(group_steps(f.execution))} steps, "
                  f"{f.execution.preemptions} preemption(s); {s.switches_before} -> {s.switches_after} "
                  f"context switches in {s.runs} shrink runs):")
    else:
        con.print(f"  interleaving: {len(steps)} steps, {ex.preemptions} preemption(s):")
    for line in format_steps(ex, steps).splitlines():
        con.print("  " + line)
    if args.trace:
        con.print("  every schedule point:")
        for line in format_events(ex).splitlines():
            con.print("  " + line)
    con.print(f"  replay token: {f.token}")
    con.print(f"  replay with:  mmlab replay {f.token}")
    if f.replays:
        ok = f.reproduced == f.replays
        con.print(f"  reproduced {f.reproduced}/{f.replays}" + (
            " (same outcome, same trace, same virtual-time latencies)" if ok else ""))
        for p in sorted(set(f.replay_problems)):
            con.print(f"    {p}", style="red")


def _summary(con: Any, results: list[Any]) -> None:
    if len(results) < 2:
        return
    from rich.table import Table
    t = Table(title="explored schedules (outcome counts; times virtual, rates wall-clock)")
    for c in ("scenario", "executions", "OK", "INTERESTING", "FORBIDDEN", "other failures", "first failure at",
              "expectations", "points/s"):
        t.add_column(c, justify="right" if c != "scenario" else "left")
    for r in results:
        other = sum(v for k, v in r.counts.items() if k not in ("OK", "INTERESTING", "FORBIDDEN"))
        t.add_row(r.scenario.title(), str(r.executions), str(r.counts.get("OK", 0)),
                  str(r.counts.get("INTERESTING", 0)), str(r.counts.get("FORBIDDEN", 0)), str(other),
                  str(r.first_failure_at or "-"), _expectations(r), f"{r.points_per_s:,.0f}")
    con.print(t)


def _expectations(r: Any) -> str:
    parts = []
    if r.finding is not None:
        parts.append(f"violated: {r.finding.outcome.verdict}")
    if r.reproductions:
        parts.append("reproduced: " + ", ".join(r.reproductions))
    return "; ".join(parts) or "held"


def _as_json(r: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "scenario": r.scenario.spec(), "strategy": r.strategy, "seed": r.seed, "params": r.params,
        "executions": r.executions, "counts": dict(r.counts), "schedule_points": r.points,
        "wall_s": round(r.wall_s, 3), "points_per_s": round(r.points_per_s),
        "controller_points_per_s": round(r.points / r.run_s) if r.run_s else 0, "exhausted": r.exhausted,
        "first_failure_at": r.first_failure_at, "time": "virtual ns in traces; wall-clock for rates"}
    g = r.pct_guarantee()
    if g is not None:
        d["pct"] = {"n": g[0], "k": g[1], "d": g[2], "p_per_execution": g[3]}
    if r.finding is not None:
        d["finding"] = _finding_json(r.finding)
    d["expected"] = {"reproduce": list(r.wanted),
                     "reproduced": {k: _finding_json(v) for k, v in r.reproductions.items()}}
    return d


def _finding_json(f: Any) -> dict[str, Any]:
    from mmlab.sched.trace import format_steps, group_steps
    out = f.shrunk.outcome if f.shrunk is not None else f.outcome
    ex = f.shown
    return {"iteration": f.iteration, "verdict": out.verdict, "what": out.what, "detail": out.detail,
            "token": f.token, "steps": len(group_steps(ex)), "preemptions": ex.preemptions,
            "interleaving": format_steps(ex).splitlines(), "reproduced": f.reproduced, "replays": f.replays}


def run_replay(args: argparse.Namespace) -> int:
    from mmlab.sched.explore import replay_token
    from mmlab.sched.token import TokenError
    from mmlab.sched.trace import fingerprint, format_events, format_steps, group_steps
    if args.times < 1:
        return _err("--times must be >= 1")
    try:
        rr = replay_token(args.token, args.times)
    except (TokenError, ValueError) as e:
        return _err(str(e))
    con = _console()
    d = rr.data
    strat = d["strategy"] + (f" {d['params']}" if d.get("params") else "")
    con.print(f"mmlab replay: {rr.scenario.title()} (recorded by mmlab {d.get('mmlab')}, {strat}, seed "
              f"{d.get('seed')}, execution {d.get('iteration')}{', shrunk' if d.get('shrunk') else ''}); "
              f"times are virtual")
    for n in rr.notes:
        con.print(f"  note: {n}")
    if rr.divergence is not None:
        con.print(str(rr.divergence), style="bold red")
        con.print("  the code or the scenario changed since the token was made: no result is reported")
        return 2
    ex, out = rr.runs[0]
    con.print(f"outcome: {out.verdict}" + (f" ({out.what})" if out.what else "")
              + f"; recorded: {d.get('outcome')}", style="bold")
    for line in out.detail.splitlines():
        con.print(f"    {line}")
    steps = group_steps(ex)
    con.print(f"interleaving: {len(steps)} steps, {ex.preemptions} preemption(s), {ex.points} schedule points, "
              f"{ex.virtual_ns / 1e6:.3f} ms virtual")
    for line in format_steps(ex, steps).splitlines():
        con.print("  " + line)
    if args.trace:
        con.print("every schedule point:")
        for line in format_events(ex).splitlines():
            con.print("  " + line)
    if rr.identical == len(rr.runs):
        con.print(f"reproduced {rr.identical}/{len(rr.runs)}: same outcome, same trace, same virtual-time latencies "
                  f"(fingerprint {fingerprint(ex)})")
    else:
        con.print(f"reproduced {rr.identical}/{len(rr.runs)}", style="bold red")
        for p in sorted(set(rr.problems)):
            con.print(f"    {p}")
        return 2
    return 1 if out.failure else 0
