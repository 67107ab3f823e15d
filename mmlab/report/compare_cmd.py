"""`mmlab compare`: the real kernel and chosen model profiles side by side, in one run.

The same scenarios (mmlab.real.scenarios) run on this machine's kernel and on each profile at
real-time costs; the latency verdicts and the race outcomes are lined up per populator, and every
place where the v6.18 profile and the real kernel disagree is marked. Exit status 1 when they
disagree anywhere.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from mmlab.real.libc import unavailable_reason
from mmlab.report.real_cmd import latency_tables, parse_sizes, pick, race_table

QUICK = dict(sizes="16M,256M", rounds=3, race_size="32M", race_rounds=4,
             populators="populate-anon,populate-file,map-locked,mlockall,mremap-locked",
             race_populators="populate-file", racers="munmap-mmap,mmap-fixed,mremap-fixed,mprotect")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="the real kernel and model profiles side by side",
                       description="Run the latency and race scenarios on this machine's kernel and on model "
                       "profiles in one run; line the verdicts up and mark every place where the v6.18 profile "
                       "and the real kernel disagree.")
    p.add_argument("--kernel", default="v6.18", help="model profiles to compare (default v6.18; e.g. v3.7,v6.18,bounded)")
    p.add_argument("--populator", default=None, help="latency populators (default: all that run on both)")
    p.add_argument("--sizes", default="16M,64M,256M", help="latency sizes (default 16M,64M,256M)")
    p.add_argument("--rounds", type=int, default=3, help="populates per size (default 3)")
    p.add_argument("--race-populator", default="populate-anon,populate-file", help="race populators")
    p.add_argument("--racer", default="all", help="racers (default all)")
    p.add_argument("--race-size", default="64M", help="race populate size (default 64M)")
    p.add_argument("--race-rounds", type=int, default=8, help="race rounds per cell (default 8)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="a reduced run that finishes within 2 minutes")
    p.add_argument("--json", metavar="FILE", help="write everything as JSON")
    p.set_defaults(func=run)


def slowdown_table(con: Any, runs: list[dict[str, Any]], names: list[str]) -> None:
    """The populating thread's cost: populate beside the victims / the same populate alone
    (medians of the rounds), per populator and size, one column per target. Model profiles run
    on an undilated clock here: their interpreter time counts in full (see `mmlab latency`)."""
    from rich.table import Table
    t = Table(title="populate slowdown beside the victims (populate / alone, medians)",
              caption="model rows: undilated clock, interpreter time included")
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
    from rich.console import Console
    from rich.table import Table
    from mmlab.kernels import parse_kernels
    from mmlab.real import scenarios as S

    con = Console()
    try:
        kernels = [k.name for k in parse_kernels(args.kernel)]
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
    except ValueError as e:
        con.print(f"mmlab compare: {e}")
        return 2
    why = unavailable_reason()
    if why:
        con.print(f"mmlab compare: cannot run here: {why}")
        return 2
    refuse = S.memory_guard(max(2 * sizes[-1], 4 * race_size) + S.READER_REGION + (64 << 20), "this comparison")
    if refuse:
        con.print(f"mmlab compare: {refuse}")
        return 2

    t_start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    races: list[dict[str, Any]] = []
    floors: dict[str, dict[str, Any]] = {}
    skipped: dict[tuple[str, str], str] = {}
    targets: list[Any] = [S.RealTarget()] + [S.ModelTarget(k) for k in kernels]
    names = [t.name for t in targets]
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
        for t in targets:
            t.close()
        con.print("interrupted: every real mapping is undone")
        return 130
    verdicts = []
    for name in names:
        verdicts += S.verdicts([r for r in runs if r["kernel"] == name], floors[name])
    latency_tables(con, runs, floors, [])
    slowdown_table(con, runs, names)

    # verdicts lined up: populator x op -> one column per target; real vs v6.18 disagreements marked
    ref = "v6.18" if "v6.18" in names else None
    vt = Table(title="latency verdicts side by side" + (" (!= : real and v6.18 disagree)" if ref else ""),
               caption="compared: the reader's faults and the writer's write-lock calls; dim rows split the "
               "writer by call -- a populate stalls whichever call comes next, so they vary from run to run")
    vt.add_column("populator")
    vt.add_column("op")
    for n in names:
        vt.add_column(n, justify="center")
    if ref:
        vt.add_column("real vs v6.18", justify="center")
    disagree = 0
    index = {(v["kernel"], v["populator"], v["op"]): v for v in verdicts}
    for p in pops:
        for op in S.VERDICT_OPS:
            compared = op in ("fault", "writer")
            cells = []
            for n in names:
                v = index.get((n, p, op))
                cells.append("-" if v is None else ("[green]bounded[/]" if v["bounded"] else "[red]unbounded[/]"))
            if all(c == "-" for c in cells):
                continue
            mark = ""
            if ref and compared:
                a, b = index.get(("real", p, op)), index.get((ref, p, op))
                if a is not None and b is not None:
                    if a["bounded"] != b["bounded"]:
                        mark = "[bold red]!=[/]"
                        disagree += 1
                    else:
                        mark = "="
            label = "writer (mmap/mprotect/munmap)" if op == "writer" else op
            vt.add_row(p, label, *cells, *([mark] if ref else []), style=None if compared else "dim")
    con.print(vt)

    race_table(con, races, f"populate vs replacement ({race_size >> 20} MiB, {race_rounds} rounds, seed {args.seed})")
    rt = Table(title="race verdicts side by side: was a replacement populated?" + (" (!= : real and v6.18 disagree)" if ref else ""))
    rt.add_column("populator")
    rt.add_column("racer")
    for n in names:
        rt.add_column(n, justify="center")
    if ref:
        rt.add_column("real vs v6.18", justify="center")
    rindex = {(r["kernel"], r["populator"], r["racer"]): r for r in races}
    for p in race_pops:
        for rc in racers:
            cells = []
            for n in names:
                r = rindex.get((n, p, rc))
                cells.append("-" if r is None else
                             (f"[red]yes {r['outcomes']['FORBIDDEN']}/{r['rounds']}[/]" if r["outcomes"]["FORBIDDEN"]
                              else f"[green]no[/] 0/{r['rounds']}"))
            mark = ""
            if ref:
                a, b = rindex.get(("real", p, rc)), rindex.get((ref, p, rc))
                if a is not None and b is not None:
                    if bool(a["outcomes"]["FORBIDDEN"]) != bool(b["outcomes"]["FORBIDDEN"]):
                        mark = "[bold red]!=[/]"
                        disagree += 1
                    else:
                        mark = "="
            rt.add_row(p, rc, *cells, *([mark] if ref else []))
    con.print(rt)
    for (n, what), w in skipped.items():
        con.print(f"[yellow]{n}: {what}[/]: {w}")
    secs = time.perf_counter() - t_start
    if ref:
        con.print(f"real kernel {targets[0].release} vs v6.18: {disagree} disagreement(s); {secs:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "verdicts": verdicts, "noise_floor": floors, "results": races,
                       "skipped": [{"target": n, "what": w_, "why": y} for (n, w_), y in skipped.items()],
                       "disagreements": disagree, "seconds": secs}, f, indent=2)
    return 1 if disagree else 0
