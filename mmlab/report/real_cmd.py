"""`mmlab real latency` and `mmlab real race`: the scenarios of `mmlab latency` and `mmlab race`
on this machine's kernel, with the same tables, verdicts and JSON shapes."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any, Optional

from mmlab.real.libc import unavailable_reason

DEFAULT_SIZES = "16M,64M,256M"


def parse_sizes(spec: str) -> list[int]:
    """``16M,64M,1G`` -> bytes, ascending; ValueError naming what is not a size."""
    out = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        m = re.fullmatch(r"(\d+)([KMG]?)i?B?", part, re.I)
        if not m:
            raise ValueError(f"{part!r} is not a size (examples: 16M, 256M, 1G)")
        n = int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2).upper()]
        if n < (1 << 20) or n & 0xFFF:
            raise ValueError(f"{part!r}: sizes must be whole pages and at least 1M")
        out.append(n)
    if not out:
        raise ValueError("no sizes given")
    return sorted(set(out))


def pick(names: str, known: dict[str, Any], what: str) -> list[str]:
    if names.strip() in ("", "all"):
        return list(known)
    out = []
    for n in (s.strip() for s in names.split(",") if s.strip()):
        if n not in known:
            raise ValueError(f"unknown {what} {n!r}; known: {', '.join(known)}")
        out.append(n)
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("real", help="run the latency and race scenarios on this machine's kernel",
                       description="The populators, victims and racers of `mmlab latency` and `mmlab race`, "
                       "run for real through ctypes (which drops the GIL inside each call), inside reserved "
                       "regions that are unmapped again at the end, also on Ctrl-C. Exit 1 on a FORBIDDEN round "
                       "or an ERROR round (one whose setup did not happen: a populate that failed or landed "
                       "elsewhere, a racer call that failed, a residency that could not be read).")
    s = p.add_subparsers(dest="real_command", metavar="{latency,race}")
    lat = s.add_parser("latency", help="victim latency while a populator runs, with bounded/unbounded verdicts")
    lat.add_argument("--populator", default="all", help="comma-separated populators (default: all that run here)")
    lat.add_argument("--sizes", default=DEFAULT_SIZES, help=f"populate sizes (default {DEFAULT_SIZES})")
    lat.add_argument("--rounds", type=int, default=3, help="populates per size; worst waits are medians over rounds")
    lat.add_argument("--quick", action="store_true", help="sizes 16M,256M and 3 rounds")
    lat.add_argument("--timing", choices=("auto", "wall"), default="auto",
                     help="victim waits from: auto = the kernel's mmap_lock events when tracing is available "
                     "(root, tracefs), else wall-clock time around each call; wall = always the latter")
    lat.add_argument("--json", metavar="FILE", help="write runs and verdicts as JSON")
    lat.add_argument("--expect-bounded", action="store_true", help="exit 1 if any verdict is unbounded")
    lat.set_defaults(func=run_latency)
    race = s.add_parser("race", help="populate vs a racing replacement of the range")
    race.add_argument("--populator", default="populate-anon,populate-file", help="comma-separated populators")
    race.add_argument("--racer", default="all", help="comma-separated racers (default: all)")
    race.add_argument("--rounds", type=int, default=10, help="rounds per cell (default 10)")
    race.add_argument("--size", default="64M", help="populate size (default 64M)")
    race.add_argument("--seed", type=int, default=1, help="seed of the racers' moments (default 1)")
    race.add_argument("--timing", choices=("auto", "wall"), default="auto",
                      help="where window hits come from: auto = the kernel's mmap_lock events when tracing is "
                      "available (root, tracefs), else wall-clock timing around the calls; wall = always the latter")
    race.add_argument("--json", metavar="FILE", help="write the results as JSON")
    race.set_defaults(func=run_race)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _fmt_us(v: float) -> str:
    from mmlab.report.latency_tables import fmt_us  # the units `mmlab latency` prints
    return fmt_us(v)


def latency_tables(con: Any, runs: list[dict[str, Any]], floors: dict[str, dict[str, Any]],
                   verdicts: list[dict[str, Any]]) -> None:
    """One side-by-side table per populator (kernel x size x op -> p50/p99/p99.9/max ms), then
    the verdicts."""
    from rich.table import Table
    from mmlab.real.scenarios import VICTIM_OPS
    VICTIM_OPS = VICTIM_OPS + ("writer",)  # noqa: N806 - the pooled write-lock calls
    for pop in dict.fromkeys(r["populator"] for r in runs):
        t = Table(title=f"{pop}: victim waits while populating (p50 / p99 / p99.9 / max)",
                  caption="timing: traced = the kernel's mmap_lock waits (start_locking to acquire_returned), "
                  "model = the model's lock records, wall = time around each call")
        t.add_column("kernel")
        t.add_column("timing")
        t.add_column("size", justify="right")
        t.add_column("populate ms", justify="right")
        for op in VICTIM_OPS:
            t.add_column(op, justify="right")
        for k, fl in floors.items():
            t.add_row(k, fl.get("timing", "wall"), "noise", "-", *[_cell(fl["victim"].get(op)) for op in VICTIM_OPS],
                      style="dim")
        for r in (r for r in runs if r["populator"] == pop):
            t.add_row(r["kernel"], r.get("timing", "wall"), f"{r['size_bytes'] >> 20}M", f"{r['populate_ms']:.1f}",
                      *[NOT_OBSERVED if op in r.get("not_observed", ()) else _cell(r["victim"].get(op))
                        for op in VICTIM_OPS])
        con.print(t)
    both = [r for r in runs if r.get("timing", "wall") != "wall" and r.get("victim_wall")]
    if both:
        t = Table(title="worst waits, wall-clock around the call vs the lock records (medians over rounds of each "
                  "round's p99.9 of wall-clock, and of its longest lock wait)", caption="wall includes the interpreter, the GIL and descheduling; the lock "
                  "records hold only the wait for mmap_lock (a per-VMA-lock fault waits for none)")
        for c in ("kernel", "populator", "size"):
            t.add_column(c, justify="right" if c == "size" else "left")
        for op in VICTIM_OPS:
            t.add_column(f"{op} wall / locks", justify="right")
        for r in both:
            t.add_row(r["kernel"], r["populator"], f"{r['size_bytes'] >> 20}M",
                      *[f"{_fmt_us(_worst(r['victim_wall'].get(op)))} / "
                        + (NOT_OBSERVED if op in r.get("not_observed", ()) else _fmt_us(_worst(r['victim'].get(op))))
                        for op in VICTIM_OPS])
        con.print(t)
    if verdicts:
        t = Table(title="verdicts: does the worst wait grow with the populate size?")
        for c in ("kernel", "populator", "op", "verdict", "why"):
            t.add_column(c)
        for v in verdicts:
            t.add_row(v["kernel"], v["populator"], v["op"], verdict_cell(v), v["why"])
        con.print(t)


NOT_OBSERVED = "[bold red]not observed[/]"


def verdict_cell(v: dict[str, Any]) -> str:
    """bounded / unbounded / not observed (a size at which the op was never measured: an error)."""
    if v["bounded"] is None:
        return NOT_OBSERVED
    return "[green]bounded[/]" if v["bounded"] else "[red]unbounded[/]"


COMPARED_OPS = ("fault", "writer")
"""The victims whose verdicts count: the reader's faults and the writer's write-lock calls pooled
(the writer is blocked in whichever call comes next, so one call kind may miss a populate)."""


def not_observed_lines(con: Any, runs: list[dict[str, Any]]) -> int:
    """One line per cell with a victim never measured inside the populate; the number of cells
    whose reader or writer (COMPARED_OPS) was not observed: errors."""
    from mmlab.real.scenarios import OBSERVE_TRIES
    n = 0
    for r in runs:
        bad = [op for op in r.get("not_observed", ()) if op in COMPARED_OPS]
        kinds = [op for op in r.get("not_observed", ()) if op not in COMPARED_OPS]
        where = f"{r['kernel']} {r['populator']} {r['size_bytes'] >> 20}M"
        if bad:
            n += 1
            con.print(f"[bold red]not observed[/] {where}: {', '.join(bad)}: no wait measured inside the populate "
                      f"in a round, {OBSERVE_TRIES} tries (a victim descheduled through it, or a writer that never "
                      f"asked for mmap_lock while it held it); no verdict uses it")
        elif kinds:
            con.print(f"[dim]{where}: no {'/'.join(kinds)} call asked for mmap_lock while the populate ran (the "
                      f"writer blocks in whichever call comes next): not observed, no verdict[/]")
    return n


def _worst(s: Optional[dict[str, Any]]) -> float:
    return 0.0 if not s else float(s.get("worst_us", s.get("max_us", 0.0)))


def _cell(s: Optional[dict[str, Any]]) -> str:
    if not s:
        return "-"
    from mmlab.report.latency_tables import percentile_cells  # no percentile shown above the max
    return " / ".join(percentile_cells(s))


def _check_real(con: Any) -> bool:
    why = unavailable_reason()
    if why:
        con.print(f"mmlab real: cannot run here: {why}")
        return False
    return True


def run_latency(args: argparse.Namespace) -> int:
    from mmlab.report.console import console
    from mmlab.real import scenarios as S

    con = console()
    try:
        sizes = parse_sizes("16M,256M" if args.quick else args.sizes)
        pops = pick(args.populator, S.POPULATORS, "populator")
        rounds = 3 if args.quick else args.rounds
        if rounds < 1:
            raise ValueError("--rounds must be >= 1")
    except ValueError as e:
        con.print(f"mmlab real latency: {e}")
        return 2
    if not _check_real(con):
        return 2
    refuse = S.memory_guard(2 * sizes[-1] + S.READER_REGION + (64 << 20), f"a {sizes[-1] >> 20} MiB populate")
    if refuse:
        con.print(f"mmlab real latency: {refuse}")
        return 2
    t = S.RealTarget(timing=args.timing)
    runs: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    try:
        with con.status("noise floor (victims alone)"):
            floor = S.run_noise_floor(t)
        for name in pops:
            why = t.unavailable(name)
            if why:
                skipped[name] = why
                continue
            for size in sizes:
                with con.status(f"real: {name} {size >> 20}M x {rounds}"):
                    runs.append(S.run_latency_cell(t, S.POPULATORS[name], size, rounds))
    except KeyboardInterrupt:
        con.print("interrupted: every mapping is undone; printing what was measured")
        _latency_out(con, args, t.name, runs, floor if "floor" in locals() else None, skipped)
        return 130
    finally:
        t.close()
    return _latency_out(con, args, t.name, runs, floor, skipped)


def _latency_out(con: Any, args: argparse.Namespace, name: str, runs: list[dict[str, Any]],
                 floor: Optional[dict[str, Any]], skipped: dict[str, str]) -> int:
    from mmlab.real import scenarios as S
    vs = S.verdicts(runs, floor) if floor else []
    latency_tables(con, runs, {name: floor} if floor else {}, vs)
    for r in runs:
        if r.get("lost_events"):
            con.print(f"[yellow]{r['populator']} {r['size_bytes'] >> 20}M: {r['lost_events']} trace events lost: "
                      f"some waits are missing (a larger buffer or a smaller size)[/]")
    timing = floor.get("timing", "wall") if floor else "wall"
    if timing == "wall" and args.timing != "wall":
        from mmlab.real.evidence import trace_unavailable
        con.print(f"[dim]victim waits from wall-clock timing around the calls: {trace_unavailable()}[/]")
    for n, why in skipped.items():
        con.print(f"[yellow]{n}[/]: {why}")
    unobserved = not_observed_lines(con, runs)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"timing": timing, "runs": runs, "verdicts": vs, "noise_floor": floor, "skipped": skipped,
                       "not_observed": unobserved}, f, indent=2)
    if unobserved:
        return 1
    return 1 if args.expect_bounded and any(v["bounded"] is False for v in vs) else 0


def race_table(con: Any, results: list[dict[str, Any]], title: str) -> None:
    """One row per cell: rounds by outcome, window hits (and where they come from), wall-clock and
    lock-record waits of the racer side by side."""
    from rich.table import Table
    t = Table(title=title, caption="window hit: the racer took mmap_lock for write after the populating call's last "
              "write release and before its populate's last read release (timing: from the model's lock records, "
              "the kernel's mmap_lock events (traced), or around the calls (wall)). racer wait: its call's wall "
              "time / its longest mmap_lock wait, medians over rounds")
    for c in ("kernel", "populator", "racer", "rounds", "window hit", "timing", "OK", "INTERESTING", "FORBIDDEN",
              "ERROR", "wrong pages", "racer wait"):
        t.add_column(c, justify="left" if c in ("kernel", "populator", "racer", "timing") else "right")
    for r in results:
        o = r["outcomes"]
        w = r.get("waits") or {}
        wait = "-" if w.get("racer_call_us") is None else _fmt_us(w["racer_call_us"]) + " / " + (
            "-" if w.get("racer_lock_wait_us") is None else _fmt_us(w["racer_lock_wait_us"]))
        t.add_row(r["kernel"], r["populator"], r["racer"], str(r["rounds"]), window_cell(r), r.get("timing", "-"),
                  str(o["OK"]), str(o["INTERESTING"]), f"[red]{o['FORBIDDEN']}[/]" if o["FORBIDDEN"] else "0",
                  f"[bold red]{o.get('ERROR', 0)}[/]" if o.get("ERROR") else "0", str(r["wrong_pages"]), wait)
    con.print(t)


def window_cell(r: dict[str, Any]) -> str:
    """Window hits, and the rounds whose hit is unknown (their populating call is missing from the
    trace): ``h (+u unknown)``; an unknown round is not a miss."""
    u = r.get("window_unknown", 0)
    return f"{r['window_hits']} (+{u} unknown)" if u else str(r["window_hits"])


def race_problems(con: Any, results: list[dict[str, Any]]) -> None:
    """The first FORBIDDEN round and the ERROR rounds of each cell, in words."""
    for r in results:
        if r["first_forbidden"]:
            f = r["first_forbidden"]
            con.print(f"FORBIDDEN {r['kernel']} {r['populator']} vs {r['racer']}: round {f['round']} (seed {f['seed']}): "
                      f"the racer started {f['racer_start_ms']:.1f} ms into a {f['populate_ms']:.1f} ms populate and "
                      f"finished at {f['racer_end_ms']:.1f} ms; {f['pages']} pages of the untouched replacement were "
                      f"resident")
        for e in r.get("errors", []):
            con.print(f"[bold red]ERROR[/] {r['kernel']} {r['populator']} vs {r['racer']}: {e}")
        if r.get("racer_first"):
            con.print(f"[dim]{r['kernel']} {r['populator']} vs {r['racer']}: {r['racer_first']} round(s) run again: "
                      f"the racer took the range before the populate mapped it (EEXIST), so they tested nothing[/]")
        if r.get("window_unknown"):
            con.print(f"[yellow]{r['kernel']} {r['populator']} vs {r['racer']}: {r['window_unknown']} round(s) with the "
                      f"window hit unknown: the populating call is missing from the trace (not counted as misses)[/]")
        if r.get("lost_events"):
            con.print(f"[yellow]{r['kernel']} {r['populator']} vs {r['racer']}: {r['lost_events']} trace events lost: "
                      f"window hits may be undercounted[/]")
    for note in dict.fromkeys(r["timing_note"] for r in results if r.get("timing") == "wall" and r.get("timing_note")):
        con.print(f"[dim]window hits from wall-clock timing around the calls: {note}[/]")


def race_status(results: list[dict[str, Any]]) -> int:
    """1 if any round was FORBIDDEN or an ERROR (a round that did not test what it says), else 0."""
    return 1 if any(r["outcomes"]["FORBIDDEN"] or r["outcomes"].get("ERROR") for r in results) else 0


def run_race(args: argparse.Namespace) -> int:
    from mmlab.report.console import console
    from mmlab.real import scenarios as S

    con = console()
    try:
        [size] = parse_sizes(args.size)
        pops = pick(args.populator, S.POPULATORS, "populator")
        racers = pick(args.racer, S.RACERS, "racer")
        if args.rounds < 1:
            raise ValueError("--rounds must be >= 1")
    except ValueError as e:
        con.print(f"mmlab real race: {e}")
        return 2
    if not _check_real(con):
        return 2
    refuse = S.memory_guard(4 * size + S.READER_REGION, f"a {size >> 20} MiB race")
    if refuse:
        con.print(f"mmlab real race: {refuse}")
        return 2
    t = S.RealTarget(timing=args.timing)
    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    interrupted = False
    try:
        for p in pops:
            why = t.unavailable(p)
            if why:
                skipped[p] = why
                continue
            for r in racers:
                with con.status(f"real: {p} vs {r} x {args.rounds}"):
                    results.append(S.run_race_cell(t, S.POPULATORS[p], r, size, args.rounds, args.seed))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        t.close()
    race_table(con, results, f"real kernel {t.release}: populate vs replacement ({size >> 20} MiB, seed {args.seed})")
    race_problems(con, results)
    for n, why in skipped.items():
        con.print(f"[yellow]{n}[/]: {why}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"timing": sorted({r["timing"] for r in results}), "results": results, "skipped": skipped}, fh,
                      indent=2)
    if interrupted:
        return 130
    return race_status(results)
