"""`mmlab race`: populate vs a racing replacement, graded jcstress-style per kernel x populator x racer.

For each cell it runs rounds (a fresh model each: a populator task and a racer task fired at a
seeded random moment of the populate), grades every populated page with the oracle, and prints
rounds, how often the racer really ran inside the populate window, and the OK / INTERESTING /
FORBIDDEN counts (zeros shown) with the number of wrongly populated pages. Each FORBIDDEN outcome
is printed with its round seed and call history so it can be replayed (``--round-seed``).
Exit status: 0 nothing forbidden, 1 a FORBIDDEN outcome (or a broken round), 2 bad arguments,
3 a hung round, 130 interrupted (what was measured so far is printed).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
from typing import Optional

from mmlab.report.costs_arg import add_costs_argument
from mmlab.harness.live import DEFAULT_PERIOD_MS
from mmlab.harness.populators import get_populators
from mmlab.harness.race import CellResult, RoundHang, run_cell, run_round
from mmlab.harness.racers import get_racers
from mmlab.harness.sizes import format_size, parse_size
from mmlab.kernels import parse_kernels

DEFAULT_DURATION_S = 1.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "race", help="populate vs a racing replacement of its range, graded OK/INTERESTING/FORBIDDEN",
        description="Race a populating call (MAP_POPULATE, MAP_LOCKED, MCL_FUTURE, brk, mremap, "
        "remap_file_pages) against another thread replacing or mprotecting its range, and grade every "
        "populated page by provenance and mapping lineage. Exit 1 on any FORBIDDEN outcome.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="racers: munmap-mmap, mmap-fixed, mremap-fixed, mprotect (control); 'every' adds "
        "mmap-fixed-populate (a replacement that asked to be populated) and mmap-fixed-unmap (a replacement "
        "unmapped again: only --check-live sees it populated).\n"
        "example: mmlab race --kernel v3.9,v3.9-rc1 --populator populate-file --rounds 20 --seed 1")
    p.add_argument("--kernel", default="all", help="comma-separated profiles or specs (default all)")
    p.add_argument("--populator", default="all", help="comma-separated populators (default all)")
    p.add_argument("--racer", default="all", help="comma-separated racers (default: the four of the issue)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--rounds", type=int, help="rounds per cell")
    g.add_argument("--duration", type=float, help=f"seconds per cell (default {DEFAULT_DURATION_S})")
    p.add_argument("--seed", type=int, help="seed of every random choice (default: random, printed)")
    p.add_argument("--round-seed", type=int, help="replay: run one round with this round seed per cell")
    p.add_argument("--size", default="32M", help="populated range per round (default 32M)")
    p.add_argument("--time-scale", type=float, default=1.0, help="cost multiplier (default 1.0)")
    add_costs_argument(p)
    p.add_argument("--show", type=int, default=1, help="FORBIDDEN rounds printed per cell (default 1)")
    p.add_argument("--json", metavar="FILE", help="write results as JSON")
    p.add_argument("--check-live", action="store_true",
                   help="also run the oracle continuously under mmap_sem (read) while each round runs: "
                   "a FORBIDDEN state a later call erased still counts")
    p.add_argument("--check-live-ms", type=float, default=DEFAULT_PERIOD_MS, metavar="MS",
                   help=f"period of the live checks (default {DEFAULT_PERIOD_MS:g} ms; implies nothing without --check-live)")
    p.set_defaults(func=run)


def _fail(msg: str) -> int:
    print(f"mmlab race: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    try:
        kernels = parse_kernels(args.kernel)
        pops = get_populators(args.populator)
        racers = get_racers(args.racer)
        size = parse_size(args.size)
    except ValueError as e:
        return _fail(str(e))
    if args.rounds is not None and args.rounds <= 0:
        return _fail("--rounds must be positive")
    if args.duration is not None and not args.duration > 0:
        return _fail("--duration must be positive")
    if not args.time_scale >= 0:
        return _fail("--time-scale must be >= 0")
    if args.show < 0:
        return _fail("--show must be >= 0")
    if not args.check_live_ms > 0:
        return _fail("--check-live-ms must be positive")
    live_ms = args.check_live_ms if args.check_live else 0.0
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    rounds = args.rounds or 0
    duration = args.duration if args.duration is not None else (0 if rounds else DEFAULT_DURATION_S)
    costs = args.costs.scaled(args.time_scale)
    sys.setswitchinterval(0.0005)

    from mmlab.report.console import console
    out = console()
    err = console(stderr=True)
    out.print(f"mmlab race: seed {seed}, size {format_size(size)}, time scale {args.time_scale}, "
              + (f"{rounds} rounds" if rounds else f"{duration:g} s") + " per cell"
              + (f", live oracle every {live_ms:g} ms" if live_ms else "") + f"; {args.costs.header}")
    cells: list[CellResult] = []
    stop = threading.Event()
    status = 0
    try:
        if args.round_seed is not None:
            cells = _replay(kernels, pops, racers, args.round_seed, size, costs, out, live_ms)
        else:
            _sweep(kernels, pops, racers, seed, size, costs, rounds, duration, args.show, cells, stop, err, live_ms)
    except KeyboardInterrupt:
        stop.set()
        status = 130
        err.print("[yellow]interrupted: results so far[/]")
    except RoundHang as h:
        print(str(h), file=sys.stderr)
        print(h.stacks, file=sys.stderr)
        print(json.dumps(h.lock_state, default=str, indent=1), file=sys.stderr)
        status = 3
    _print_table(out, cells, seed)
    _print_forbidden(out, cells, seed, args.show)
    if args.json:
        _write_json(args.json, cells, seed, size, args.time_scale, rounds, duration, live_ms, args.costs.as_dict())
    if status:
        return status
    if any(c.outcomes["FORBIDDEN"] for c in cells):
        return 1
    if any(c.broken for c in cells):
        return 1
    return 0


def _sweep(kernels, pops, racers, seed, size, costs, rounds, duration, show, cells, stop, err,
           live_ms: float = 0.0) -> None:
    tty = err.is_terminal
    total = len(kernels) * len(pops) * len(racers)
    if tty:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err, transient=True)
        task = prog.add_task("race", total=total)
        prog.start()
    try:
        for k in kernels:
            windows: dict[str, int] = {}
            for p in pops:
                for r in racers:
                    desc = f"{k.name} {p.name} {r.name}"
                    if tty:
                        prog.update(task, description=desc)

                    def on_round(cell: CellResult, res) -> None:
                        if tty:
                            prog.update(task, description=f"{desc}: {cell.rounds} rounds, "
                                        f"{cell.outcomes['FORBIDDEN']} FORBIDDEN")
                    cell = run_cell(k, p, r, seed=seed, size=size, costs=costs, rounds=rounds,
                                    duration_s=duration, window_ns=windows.get(p.name, 0), keep=max(show, 1),
                                    stop=stop, on_round=on_round, check_live_ms=live_ms)
                    if cell.window_ns and not cell.broken_msg.startswith("calibration"):
                        windows[p.name] = cell.window_ns
                    cells.append(cell)
                    if tty:
                        prog.advance(task)
                    else:
                        o = cell.outcomes
                        print(f"{desc}: {cell.rounds} rounds, {cell.window_hits} window hits, OK {o['OK']} "
                              f"INTERESTING {o['INTERESTING']} FORBIDDEN {o['FORBIDDEN']}"
                              + (f", live: {cell.live_checks} checks, FORBIDDEN seen live in {cell.live_forbidden} "
                                 f"rounds ({cell.live_only} only live)" if live_ms else "")
                              + (f", BROKEN: {cell.broken_msg}" if cell.broken else ""), file=sys.stderr, flush=True)
    finally:
        if tty:
            prog.stop()


def _replay(kernels, pops, racers, round_seed: int, size, costs, out, live_ms: float = 0.0) -> list[CellResult]:
    from mmlab.harness.race import calibrate
    cells = []
    for k in kernels:
        for p in pops:
            w = calibrate(k, p, size, costs)
            for r in racers:
                res = run_round(k, p, r, seed=round_seed, size=size, window_ns=w, costs=costs, check_live_ms=live_ms)
                c = CellResult(k.name, p.name, r.name, window_ns=w, check_live_ms=live_ms)
                c.add(res, 1)
                cells.append(c)
                out.print(f"[bold]{k.name} {p.name} {r.name}[/] round seed {round_seed}: delay "
                          f"{res.delay_ns / 1e6:.3f} ms of a {w / 1e6:.3f} ms window, window hit {res.window_hit}")
                out.print(res.verdict.report(history=True), highlight=False, markup=False)
                if res.live is not None and res.live.first is not None:
                    out.print("  " + res.live.first.describe(), highlight=False, markup=False)
    return cells


def _print_table(out, cells: list[CellResult], seed: int) -> None:
    from rich.table import Table
    t = Table(title=f"populate vs racing replacement (seed {seed})")
    for c, j in (("kernel", "left"), ("populator", "left"), ("racer", "left"), ("rounds", "right"),
                 ("overlap", "right"), ("window hits", "right"), ("OK", "right"), ("INTERESTING", "right"),
                 ("FORBIDDEN", "right"), ("wrong pages", "right"), ("max/round", "right")):
        t.add_column(c, justify=j, no_wrap=True)  # type: ignore[arg-type]
    live = any(c.check_live_ms for c in cells)
    if live:
        t.add_column("live checks", justify="right", no_wrap=True)
        t.add_column("live F (only)", justify="right", no_wrap=True)
    for c in cells:
        o = c.outcomes
        forb = f"[bold red]{o['FORBIDDEN']}[/]" if o["FORBIDDEN"] else "0"
        inter = f"[yellow]{o['INTERESTING']}[/]" if o["INTERESTING"] else "0"
        racer = c.racer + (" [red]BROKEN[/]" if c.broken else "")
        row = [c.kernel, c.populator, racer, str(c.rounds), str(c.overlaps), str(c.window_hits),
               str(o["OK"]), inter, forb, str(c.wrong_pages), str(c.max_wrong_pages)]
        if live:
            row += [str(c.live_checks), f"{c.live_forbidden} ({c.live_only})"]
        t.add_row(*row)
    t.caption = ("overlap: the racer's call started before the populating call returned; window hits: it took "
                 "mmap_sem for write between the populating call's up_write() and its populate's last up_read()"
                 + ("; live F: rounds in which a check under mmap_sem (read) during the round saw FORBIDDEN "
                    "(only: the final state no longer showed it)" if live else ""))
    out.print(t)
    for c in cells:
        if c.broken:
            out.print(f"[red]BROKEN[/] {c.kernel} {c.populator} {c.racer}: {c.broken_msg}", highlight=False)


def _print_forbidden(out, cells: list[CellResult], seed: int, show: int) -> None:
    for c in cells:
        for r in c.forbidden[:show]:
            out.print(f"\n[bold red]FORBIDDEN[/] {c.kernel} {c.populator} {c.racer}: seed {seed}, round seed "
                      f"{r.seed}, racer fired {r.delay_ns / 1e6:.3f} ms into the call"
                      f"{' (inside the populate window)' if r.window_hit else ''}")
            live = f" --check-live --check-live-ms {c.check_live_ms:g}" if c.check_live_ms else ""
            out.print(f"  replay: mmlab race --kernel {c.kernel} --populator {c.populator} --racer {c.racer} "
                      f"--round-seed {r.seed}{live}", highlight=False, markup=False)
            if r.live is not None and r.live.first is not None:
                out.print("  " + r.live.first.describe(), highlight=False, markup=False)
            out.print(r.verdict.report(history=True), highlight=False, markup=False)


def _write_json(path: str, cells: list[CellResult], seed: int, size: int, time_scale: float, rounds: int,
                duration: float, live_ms: float = 0.0, costs: Optional[dict] = None) -> None:
    doc = {"seed": seed, "size": size, "time_scale": time_scale, "costs": costs, "rounds_per_cell": rounds or None,
           "duration_per_cell_s": duration or None, "check_live_ms": live_ms or None,
           "results": [c.as_dict() for c in cells]}
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, default=str)
