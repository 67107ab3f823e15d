"""`mmlab compare`: the real kernel and chosen model profiles side by side, in one run.

The same scenarios (mmlab.real.scenarios) run on this machine's kernel and on each profile at
real-time costs; the latency verdicts and the race outcomes are lined up per populator. The
reference is the profile that claims this machine's kernel by its version (mmlab.kernels.CLAIMS:
v6.18 with the switches of behaviours newer than the kernel turned off, e.g.
``v6.18+madvise_vma_lock=off+mremap_move_multi_vma=off`` for 6.15-6.16), added to the run if it
was not asked for; every place where it and
the real kernel disagree is marked, and so is every place where a variant of it (a switch flipped,
``v6.18+per_vma_lock=off``) disagrees -- shown, not counted. Exit status 1 when the reference
disagrees anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from mmlab.real.libc import unavailable_reason
from mmlab.report.costs_arg import add_costs_argument
from mmlab.report.latency_cmd import add_time_args, make_dilation
from mmlab.report.real_cmd import (latency_tables, not_observed_lines, parse_sizes, pick, race_problems, race_table,
                                   verdict_cell)

QUICK = dict(sizes="16M,256M", rounds=3, race_size="32M", race_rounds=4,
             populators="populate-anon,populate-file,map-locked,mlockall,mremap-locked",
             race_populators="populate-file", racers="munmap-mmap,mmap-fixed,mremap-fixed,mprotect")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="the real kernel and model profiles side by side",
                       description="Run the latency and race scenarios on this machine's kernel and on model "
                       "profiles in one run; line the verdicts up and mark every place where the real kernel and "
                       "the profile that claims it by behaviour (v3.7: 3.7-3.8, v3.9: 3.9-3.19, from 4.0 v6.18 with "
                       "the switches of behaviours newer than the kernel off, e.g. "
                       "v6.18+madvise_vma_lock=off+mremap_move_multi_vma=off for 6.15-6.16) "
                       "disagree, and where a switch-flipped variant of that profile disagrees. Exit 1 when the "
                       "claiming profile disagrees.")
    p.add_argument("--kernel", default="", help="model profiles to compare (default: the one that claims this "
                   "kernel; e.g. v3.7,v6.18,v6.18+per_vma_lock=off,bounded); the claiming one is always added")
    p.add_argument("--populator", default=None, help="latency populators (default: all that run on both)")
    p.add_argument("--sizes", default="16M,64M,256M", help="latency sizes (default 16M,64M,256M)")
    p.add_argument("--rounds", type=int, default=3, help="populates per size (default 3)")
    p.add_argument("--race-populator", default="populate-anon,populate-file", help="race populators")
    p.add_argument("--racer", default="all", help="racers (default all)")
    p.add_argument("--race-size", default="64M", help="race populate size (default 64M)")
    p.add_argument("--race-rounds", type=int, default=8, help="race rounds per cell (default 8)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timing", choices=("auto", "wall"), default="auto",
                   help="auto: the real kernel's victim waits and window hits from its mmap_lock events when "
                   "tracing is available (root, tracefs), and the models' victim waits from their lock records; "
                   "wall: time around the calls for the real kernel and for the models' victim waits (the "
                   "models' window hits always come from their lock records)")
    p.add_argument("--quick", action="store_true", help="a reduced run that finishes within 2 minutes")
    p.add_argument("--json", metavar="FILE", help="write everything as JSON")
    add_costs_argument(p)
    add_time_args(p)
    p.set_defaults(func=run)


def slowdown_table(con: Any, runs: list[dict[str, Any]], names: list[str]) -> None:
    """The populating thread's cost: populate beside the victims / the same populate alone
    (medians of the rounds), per populator and size, one column per target. Model profiles run
    on a dilated clock (their interpreter time counts 1/k, see `mmlab latency`)."""
    from rich.table import Table
    t = Table(title="populate slowdown beside the victims (populate / alone, medians)",
              caption="model columns: modelled time on a dilated clock (the residual is printed above)")
    t.add_column("populator")
    t.add_column("size", justify="right")
    for n in names:
        t.add_column(n, justify="right", no_wrap=True)
    index = {(r["kernel"], r["populator"], r["size_bytes"]): r for r in runs}
    for p, size in dict.fromkeys((r["populator"], r["size_bytes"]) for r in runs):
        cells = []
        for n in names:
            r = index.get((n, p, size))
            sl = r.get("slowdown") if r else None
            cells.append("-" if sl is None else f"{sl:.2f}x ({r['populate_ms']:.0f}/{r['alone_ms']:.0f} ms)")  # type: ignore[index]
        t.add_row(p, f"{size >> 20}M", *cells)
    con.print(t)


def run(args: argparse.Namespace) -> int:
    from mmlab.clock import hooks
    try:
        return _run(args)
    finally:
        hooks.syscall_burn_ns = 0  # --burn-us: set by make_dilation for the whole run


def _run(args: argparse.Namespace) -> int:
    from mmlab.report.console import console
    from rich.table import Table
    from mmlab.kernels import base_profile, claiming_profile, get_kernel, parse_kernels
    from mmlab.real import scenarios as S

    con = console()
    err = console(stderr=True)  # errors and the interruption go to stderr, as trace and conform do
    try:
        release = os.uname().release
        ref = claiming_profile(release)
        profiles = parse_kernels(args.kernel) if args.kernel.strip() else []
        if ref is not None and ref not in [k.name for k in profiles]:
            profiles.insert(0, get_kernel(ref))
        if not profiles:
            raise ValueError(f"no profile claims kernel {release} and none was given with --kernel")
        kernels = [k.name for k in profiles]
        # marked against the real kernel: the claiming profile, then its switch-flipped variants
        ref_base = base_profile(get_kernel(ref)).name if ref else None
        marked = [ref] + [k.name for k in profiles if k.name != ref and base_profile(k).name == ref_base] if ref else []
        if args.quick:
            sizes, rounds = parse_sizes(QUICK["sizes"]), QUICK["rounds"]
            [race_size] = parse_sizes(QUICK["race_size"])
            race_rounds = QUICK["race_rounds"]
            pops = pick(args.populator or QUICK["populators"], S.POPULATORS, "populator")
            race_pops = pick(QUICK["race_populators"], S.POPULATORS, "populator")
            racers = pick(QUICK["racers"], S.RACERS, "racer")
        else:
            sizes, rounds = parse_sizes(args.sizes), args.rounds
            [race_size] = parse_sizes(args.race_size)
            race_rounds = args.race_rounds
            pops = pick(args.populator or "all", S.POPULATORS, "populator")
            race_pops = pick(args.race_populator, S.POPULATORS, "populator")
            racers = pick(args.racer, S.RACERS, "racer")
        if len(sizes) < 2 or rounds < 1 or race_rounds < 1:
            raise ValueError("need at least two sizes and one round")
        # the models' clocks: quick targets (8 us a call) by default, a verdict's shape needs no more
        dil = make_dilation(args, 1.0, quick=True)
    except ValueError as e:
        err.print(f"mmlab compare: {e}")
        return 2
    why = unavailable_reason()
    if why:
        err.print(f"mmlab compare: cannot run here: {why}")
        return 2
    refuse = S.memory_guard(max(2 * sizes[-1], 4 * race_size) + S.READER_REGION + (64 << 20), "this comparison")
    if refuse:
        err.print(f"mmlab compare: {refuse}")
        return 2

    con.print(f"mmlab compare: real kernel vs {', '.join(kernels)}; models at {args.costs.header}", highlight=False)
    t_start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    races: list[dict[str, Any]] = []
    floors: dict[str, dict[str, Any]] = {}
    skipped: dict[tuple[str, str], str] = {}
    real = S.RealTarget(timing=args.timing)
    # the models' victim waits come from their lock records exactly when the real kernel's do
    targets: list[Any] = [real] + [S.ModelTarget(k, args.costs.costs, lock_waits=real.lock_waits,
                                                 dilation=dil.recalibrated().k) for k in kernels]  # type: ignore[attr-defined]
    ks = [t.dilation for t in targets[1:]]
    con.print(f"models' time: {dil.text()}; per model k {', '.join(f'{n} {k:.1f}' for n, k in zip(kernels, ks))}: "  # type: ignore[attr-defined]
              f"residual at most {dil.overhead_ns / min(ks) / 1e3:.2f} us of modelled time per call "  # type: ignore[attr-defined]
              "(the real kernel's times are wall time)", highlight=False)
    names = [t.name for t in targets]
    interrupted = False
    try:
        for t in targets:
            with con.status(f"{t.name}: noise floor"):
                floors[t.name] = S.run_noise_floor(t)
            for p in pops:
                w = t.unavailable(p)
                if w:
                    skipped[(t.name, p)] = w
                    continue
                for size in sizes:
                    with con.status(f"{t.name}: {p} {size >> 20}M x {rounds}"):
                        runs.append(S.run_latency_cell(t, S.POPULATORS[p], size, rounds))
            for p in race_pops:
                for r in racers:
                    w = t.unavailable(p) or t.unavailable(r)
                    if w:
                        skipped[(t.name, f"{p} vs {r}")] = w
                        continue
                    with con.status(f"{t.name}: {p} vs {r} x {race_rounds}"):
                        races.append(S.run_race_cell(t, S.POPULATORS[p], r, race_size, race_rounds, args.seed))
            t.close()
    except KeyboardInterrupt:
        interrupted = True
    finally:  # on every way out: the real target's mappings, locks and /var/tmp/mmlab-real-* files
        for t in targets:
            t.close()
    if interrupted:
        err.print("interrupted: every real mapping is undone")
        return 130
    verdicts = []
    for name in names:
        verdicts += S.verdicts([r for r in runs if r["kernel"] == name], floors[name])
    latency_tables(con, runs, floors, [])
    if not real.lock_waits:
        con.print(f"[dim]real kernel: victim waits and window hits from wall-clock timing around the calls "
                  f"({real.timing_note()}); the models' from wall-clock time around their calls too[/]")
    slowdown_table(con, runs, names)

    # verdicts lined up: populator x op -> one column per target; real vs each marked profile
    note = f" (!= : real and {ref} disagree)" if ref else " (no profile claims this kernel: nothing marked)"
    vt = Table(title="latency verdicts side by side" + note,
               caption="compared: the reader's faults and the writer's write-lock calls; dim rows split the "
               "writer by call -- a populate stalls whichever call comes next, so they vary from run to run")
    vt.add_column("populator")
    vt.add_column("op")
    for n in names:
        vt.add_column(n, justify="center")
    for m in marked:
        vt.add_column(f"real vs {m}", justify="center")
    disagree = {m: 0 for m in marked}
    index = {(v["kernel"], v["populator"], v["op"]): v for v in verdicts}
    for p in pops:
        for op in S.VERDICT_OPS:
            compared = op in ("fault", "writer")
            cells = []
            for n in names:
                v = index.get((n, p, op))
                cells.append("-" if v is None else verdict_cell(v))
            if all(c == "-" for c in cells):
                continue
            marks = [_mark(index.get(("real", p, op)), index.get((m, p, op)), lambda v: v["bounded"], disagree, m)
                     if compared else "" for m in marked]
            label = "writer (mmap/mprotect/munmap)" if op == "writer" else op
            vt.add_row(p, label, *cells, *marks, style=None if compared else "dim")
    con.print(vt)

    race_table(con, races, f"populate vs replacement ({race_size >> 20} MiB, {race_rounds} rounds, seed {args.seed})")
    race_problems(con, races)
    rt = Table(title="race verdicts side by side: was a replacement populated?" + note,
               caption="yes k/n: k of n rounds populated a replacement that never asked (FORBIDDEN); "
               "?: no round hit the window, so the race was not tested (neither = nor !=, not counted); "
               "ERROR rounds did not set up what they test and are neither")
    rt.add_column("populator")
    rt.add_column("racer")
    for n in names:
        rt.add_column(n, justify="center")
    for m in marked:
        rt.add_column(f"real vs {m}", justify="center")
    rindex = {(r["kernel"], r["populator"], r["racer"]): r for r in races}
    for p in race_pops:
        for rc in racers:
            cells = [_race_cell(rindex.get((n, p, rc))) for n in names]
            marks = [_mark(rindex.get(("real", p, rc)), rindex.get((m, p, rc)),
                           _race_key, disagree, m) for m in marked]
            rt.add_row(p, rc, *cells, *marks)
    con.print(rt)
    for (n, what), w in skipped.items():
        con.print(f"[yellow]{n}: {what}[/]: {w}")
    secs = time.perf_counter() - t_start
    errors = sum(r["outcomes"].get("ERROR", 0) for r in races)
    unobserved = not_observed_lines(con, runs)
    if ref:
        con.print(f"real kernel {targets[0].release} (claimed by {ref}) vs {ref}: {disagree[ref]} disagreement(s); "
                  f"{secs:.0f} s")
        for m in marked[1:]:
            con.print(f"  variant {m} vs real: {disagree[m]} disagreement(s) (shown, not counted)")
    else:
        con.print(f"real kernel {targets[0].release}: no profile claims it (mmlab.kernels.CLAIMS), so nothing is "
                  f"marked; {secs:.0f} s")
    if errors:
        con.print(f"[bold red]{errors} race round(s) were ERROR[/]: they tested nothing (see above)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"costs": args.costs.as_dict(), "time": {"dilation": dil.as_dict(),  # type: ignore[attr-defined]
                       "model_k": dict(zip(kernels, ks))}, "runs": runs, "verdicts": verdicts, "noise_floor": floors, "results": races,
                       "skipped": [{"target": n, "what": w_, "why": y} for (n, w_), y in skipped.items()],
                       "timing": {"latency": "traced" if real.lock_waits else "wall",
                                  "race": sorted({r["timing"] for r in races if r["kernel"] == "real"})},
                       "reference": ref, "marked": marked, "release": targets[0].release,
                       "disagreements": disagree.get(ref, 0) if ref else 0, "disagreements_by_profile": disagree,
                       "race_errors": errors, "latency_not_observed": unobserved, "seconds": secs}, f, indent=2)
    return 1 if (ref and disagree[ref]) or errors or unobserved else 0


def _mark(real: Any, model: Any, key: Any, counts: dict[str, int], name: str) -> str:
    """``=`` or ``!=`` for one cell of the real kernel against profile *name* (``!=`` counted)."""
    if real is None or model is None:
        return ""
    a, b = key(real), key(model)
    if a is None or b is None:
        return "?"  # a side saw nothing it could grade
    if a != b:
        counts[name] += 1
        return "[bold red]!=[/]"
    return "="


def _race_key(r: dict[str, Any]) -> Any:
    """Was a replacement populated: True (a FORBIDDEN round), False (the racer hit the window in
    some round and no graded round populated a replacement), None when the race was not observed:
    no round hit the window (the racer came before or after the populate; not tested) or no round
    could be graded (ERROR). None is neither agreement nor disagreement."""
    o = r["outcomes"]
    if o["FORBIDDEN"]:
        return True
    if not r.get("window_hits") or not (o["OK"] or o["INTERESTING"]):
        return None
    return False


def _race_cell(r: Any) -> str:
    if r is None:
        return "-"
    o, n = r["outcomes"], r["rounds"]
    err = f" [bold red]+{o['ERROR']} ERROR[/]" if o.get("ERROR") else ""
    if o["FORBIDDEN"]:
        return f"[red]yes {o['FORBIDDEN']}/{n}[/]" + err
    if _race_key(r) is None:
        return f"[yellow]?[/] 0/{n}, no window hit" + err  # the race was not tested
    return f"[green]no[/] 0/{n}" + err
