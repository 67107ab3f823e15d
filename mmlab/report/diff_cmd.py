"""`mmlab diff`: differential testing of the v6.18 model against this machine's kernel.

Random single-threaded call sequences run on both (see :mod:`mmlab.real.diff`); after every call
the return value or errno, the vma layout, residency and lock state must agree, or be explained
by a documented difference (:mod:`mmlab.real.known`). Every other mismatch is shrunk to the
shortest sequence that still disagrees and printed as a runnable snippet. Exit status 1 on any
such mismatch.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import time
from typing import Any

from mmlab.real.libc import unavailable_reason


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diff", help="differential testing: the v6.18 model against the real kernel",
                       description="Run random call sequences (mmap with every supported flag combination, "
                       "anonymous or of a file -- a disk file opened read-write and read-only, and a memfd, "
                       "shared, private or MAP_SHARED_VALIDATE, at any offset --, munmap, mprotect, mremap, "
                       "mlock/mlock2/munlock, mlockall/munlockall, madvise, remap_file_pages, touches) "
                       "inside a reserved region on the real kernel and on the v6.18 model, compare after "
                       "every call (result or errno, layout with each vma's file and offset, mincore -- the "
                       "page cache for file mappings --, ptes, smaps Locked), and shrink any disagreement "
                       "to a runnable snippet. The disk file goes to $MMLAB_DIFF_DIR, else the temporary "
                       "directory unless it is tmpfs, else the working directory.")
    p.add_argument("--cases", type=int, default=200, help="number of random sequences (default 200)")
    p.add_argument("--seed", type=int, default=1, help="seed of the sequence generator (default 1)")
    p.add_argument("--case", type=int, default=None, help="run only this case number of the seed")
    p.add_argument("--steps", default="3-10", help="calls per sequence, MIN-MAX (default 3-10)")
    p.add_argument("--pages", type=int, default=16, help="size of the region in pages (default 16)")
    p.add_argument("--kernel", default="v6.18", help="model profile to compare (default v6.18)")
    p.add_argument("--show", type=int, default=3, help="mismatch kinds to shrink and print (default 3)")
    p.add_argument("--no-shrink", action="store_true", help="print mismatches as found, without shrinking")
    p.add_argument("--json", metavar="FILE", help="write the summary and every mismatch as JSON")
    p.set_defaults(func=run)


def _steps(spec: str) -> tuple[int, int]:
    lo, _, hi = spec.partition("-")
    a, b = int(lo), int(hi or lo)
    if not 1 <= a <= b <= 200:
        raise ValueError
    return a, b


def run(args: argparse.Namespace) -> int:
    from mmlab.report.console import console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    con = console()
    try:
        smin, smax = _steps(args.steps)
    except ValueError:
        con.print(f"mmlab diff: --steps takes MIN-MAX with 1 <= MIN <= MAX <= 200, not {args.steps!r}")
        return 2
    if args.cases < 1 or not 4 <= args.pages <= 256 or args.show < 0:
        con.print("mmlab diff: --cases must be >= 1, --pages 4..256, --show >= 0")
        return 2
    try:
        from mmlab.kernels import get_kernel
        get_kernel(args.kernel)
    except ValueError as e:
        con.print(f"mmlab diff: {e}")
        return 2
    why = unavailable_reason()
    if why:
        con.print(f"mmlab diff: cannot run here: {why}")
        return 2
    from mmlab.real import diff as D
    from mmlab.real.known import KNOWN

    missing = D.model_ops_missing()
    skip = frozenset(missing)
    cases = [args.case] if args.case is not None else list(range(args.cases))
    explained: collections.Counter[str] = collections.Counter()
    groups: dict[tuple, list[tuple[int, Any]]] = collections.defaultdict(list)
    nsteps = 0
    t0 = time.perf_counter()
    with Progress(TextColumn("diff"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[bad]} mismatches"),
                  TimeElapsedColumn(), console=con, transient=True) as prog:
        task = prog.add_task("cases", total=len(cases), bad=0)
        nbad = 0
        results = []
        for c in cases:
            ops = D.generate_case(random.Random(f"{args.seed}:{c}"), random.Random(f"{args.seed}:{c}:n").randint(smin, smax),
                                  args.pages, skip)
            r = D.run_case(ops, args.pages, kernel=args.kernel)
            results.append(r)
            nsteps += r.steps_run
            for _, name in r.explained:
                explained[name] += 1
            if not r.agree:
                nbad += 1
                m = r.mismatch
                groups[(m.op.name, tuple(m.fields))].append((c, r))
            prog.update(task, advance=1, bad=nbad)
    secs = time.perf_counter() - t0

    t = Table(title=f"mmlab diff: real kernel {_release()} vs model {args.kernel} "
              f"(seed {args.seed}, {len(cases)} cases, {nsteps} calls, {secs:.1f} s)")
    t.add_column("outcome")
    t.add_column("count", justify="right")
    t.add_column("what")
    counts = D.tally(results)
    nbad = counts["mismatch"]
    t.add_row("[green]agree[/]", str(counts["agree"]), "same result, layout, residency, locks after every call")
    t.add_row("[yellow]agree with excuses[/]", str(counts["excused"]),
              "agree only because documented differences (below) explained some steps")
    for kd in KNOWN:
        t.add_row(f"known: {kd.name}", str(explained.get(kd.name, 0)), kd.short)
    for (opname, fields), lst in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        t.add_row(f"[red]MISMATCH[/] {opname}", str(len(lst)), f"disagree on {', '.join(fields)}")
    for n, mod in missing.items():
        t.add_row(f"[yellow]not generated[/]: {n}", "-", f"the model has no {mod} yet")
    con.print(t)
    pct = 100.0 * counts["agree"] / len(cases)
    con.print(f"agreement: {pct:.1f}% of cases ({counts['agree']}/{len(cases)}) with no excuse; "
              f"{counts['excused']} more agree only through documented differences (excused only when their "
              f"own check explains the disagreement: mmlab/real/known.py)")

    shown = []
    for (opname, fields), lst in sorted(groups.items(), key=lambda kv: -len(kv[1]))[:args.show]:
        c, r = lst[0]
        ops = r.ops[:r.mismatch.step + 1]
        if not args.no_shrink:
            ops = D.shrink(ops, lambda o: D.fails(o, args.pages, kernel=args.kernel))
            r2 = D.run_case(ops, args.pages, kernel=args.kernel)
            if r2.mismatch is not None:
                r = r2
        head = (f"mmlab diff --seed {args.seed} --case {c}: {opname} disagrees on {', '.join(fields)} "
                f"({len(lst)} cases like it)")
        con.rule(head)
        print(r.mismatch.describe(), flush=True)
        snip = D.snippet(ops, args.pages, head, kernel=args.kernel)
        print(snip, flush=True)  # plain: a wrapped line would not run
        shown.append({"seed": args.seed, "case": c, "op": opname, "fields": list(fields), "count": len(lst),
                      "ops": [o.source() for o in ops], "snippet": snip, "detail": r.mismatch.describe()})
    if args.json:
        out = {"real_kernel": _release(), "model": args.kernel, "seed": args.seed, "cases": len(cases),
               "calls": nsteps, "agree": counts["agree"], "agree_excused": counts["excused"], "agreement_pct": pct,
               "known": {kd.name: {"count": explained.get(kd.name, 0), "reason": kd.reason} for kd in KNOWN},
               "mismatches": [{"op": k[0], "fields": list(k[1]), "cases": [c for c, _ in v]} for k, v in groups.items()],
               "shrunk": shown, "not_generated": missing}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 1 if nbad else 0


def _release() -> str:
    import os
    return os.uname().release
