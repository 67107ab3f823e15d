"""`mmlab tune`: the trade-off explorer -- the writer's worst wait against the populate's slowdown.

Sweep one or two switches of a kernel profile (`--sweep SWITCH=V1,V2,...`, given once or twice);
for each value (each pair), one populator populates one size beside the victims and alone,
`--repeats` times each, on a dilated clock (see `mmlab latency --help`). Each point is the median
writer worst wait and the median slowdown (populate beside the victims / populate alone); the
reference kernels (default v6.18) are measured the same way. The table marks the Pareto front
(no other point has both a smaller wait and a smaller slowdown); `--plot` draws it, wait against
slowdown, with the references; `--json` keeps every run.

Exit status: 0 done; 1 a run failed; 2 bad arguments (nothing run); 3 a hang.
"""

from __future__ import annotations

import argparse
import json
import random
import sys

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    from mmlab.report.costs_arg import add_costs_argument
    from mmlab.report.latency_cmd import add_time_args

    p = sub.add_parser(
        "tune", help="trade-off explorer: writer worst wait vs populate slowdown over switch values (Pareto plot)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: mmlab tune --sweep populate_batch_pages=64,256,512,2048,8192 --size 256M --plot tune.png")
    p.add_argument("--kernel", default="bounded", help="the profile whose switches are swept (default bounded)")
    p.add_argument("--sweep", action="append", default=[], metavar="SWITCH=V1,V2,...",
                   help="a switch and its values; give it twice for a grid of two switches")
    p.add_argument("--reference", default="v6.18", help="comma-separated reference kernels (default v6.18; "
                   "'none' for none)")
    p.add_argument("--populator", default="populate-anon", help="one populator (default populate-anon)")
    p.add_argument("--size", default="256M", help="populate size (default 256M)")
    p.add_argument("--repeats", type=int, default=3, help="runs per point, beside the victims and alone (default 3)")
    p.add_argument("--time-scale", type=float, default=1.0, help="cost multiplier (default 1)")
    p.add_argument("--interval-us", type=float, default=250.0, help="victims' open-loop interval (default 250)")
    p.add_argument("--seed", type=int, default=None, help="seed (default: random, printed)")
    p.add_argument("--victims", default="fault,writer",
                   help="comma-separated victims, as `mmlab latency --victims` (default fault,writer); with "
                   "vma-writer, a point's wait is the worse of the writer elsewhere and the writer on the vma")
    add_costs_argument(p)
    add_time_args(p)
    p.add_argument("--json", metavar="FILE", help="write every run as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="the Pareto plot (matplotlib)")
    p.set_defaults(func=run)


def _bad(msg: str) -> int:
    print(f"mmlab tune: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from mmlab.clock import hooks
    from mmlab.harness.latency import LatencyConfig
    from mmlab.harness.populators import get_populators
    from mmlab.harness.tune import parse_sweep
    from mmlab.kernels import get_kernel, parse_kernels
    from mmlab.report.latency_cmd import make_dilation, parse_size
    from mmlab.report.latency_plot import have_matplotlib

    try:
        base = get_kernel(args.kernel)
        if not args.sweep or len(args.sweep) > 2:
            raise ValueError("give --sweep SWITCH=V1,V2,... once or twice")
        sweeps = [parse_sweep(s, base) for s in args.sweep]
        if len({s.switch for s in sweeps}) != len(sweeps):
            raise ValueError("the two --sweep switches must differ")
        refs = [] if args.reference.strip() == "none" else parse_kernels(args.reference)
        pops = get_populators(args.populator)
        if len(pops) != 1:
            raise ValueError("--populator takes one populator")
        size = parse_size(args.size)
        if args.repeats < 1 or not args.time_scale > 0 or not args.interval_us > 0:
            raise ValueError("--repeats must be >= 1, --time-scale and --interval-us > 0")
        if args.plot and not have_matplotlib():
            raise ValueError("--plot needs matplotlib: pip install 'mmlab[plot]' (or matplotlib)")
        from mmlab.harness.victims import parse_victims
        victims = parse_victims(args.victims)
        if not any(v in ("writer", "vma-writer") for v in victims):
            raise ValueError("--victims needs writer or vma-writer (the wait the plot shows)")
        dil = make_dilation(args, args.time_scale)
    except ValueError as e:
        return _bad(str(e))
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    cfg = LatencyConfig([base], pops, [size], costs=args.costs.scaled(args.time_scale), seed=seed,
                        stall_ms=1e9, repeats=args.repeats, interval_ns=int(args.interval_us * 1e3),
                        dilation=dil, victims=victims)  # type: ignore[arg-type]
    try:
        return _report(args, cfg, size, sweeps, refs)
    finally:
        hooks.syscall_burn_ns = 0


def _report(args: argparse.Namespace, cfg: object, size: int, sweeps: list, refs: list) -> int:
    from rich.table import Table

    from mmlab.harness.latency import dilation_text
    from mmlab.harness.tune import TunePoint, run_tune
    from mmlab.report.latency_tables import size_text

    from mmlab.report.console import console as report_console
    console = report_console()  # a log or a pipe: tables at their width, names whole
    c = cfg  # type: ignore[assignment]
    console.print(f"mmlab tune: {c.kernels[0].name} {c.populators[0].name} {size_text(size)}; sweeping "  # type: ignore[attr-defined]
                  + " x ".join(f"{s.switch}={','.join(map(str, s.values))}" for s in sweeps)
                  + f"; references {', '.join(r.name for r in refs) or 'none'}; {c.repeats} repeats; "  # type: ignore[attr-defined]
                  f"seed {c.seed}", highlight=False)  # type: ignore[attr-defined]
    console.print(args.costs.header, highlight=False)
    console.print(c.dilation.text(), highlight=False)  # type: ignore[attr-defined]

    def progress(pt: TunePoint, text: str) -> None:
        print(f"  {pt.kernel}: {text}", flush=True)

    res = run_tune(cfg, size, sweeps, refs, progress)  # type: ignore[arg-type]
    t = Table(title=f"writer worst wait vs populate slowdown, {size_text(size)} (medians of {c.repeats}; "  # type: ignore[attr-defined]
              "* = Pareto front)", title_justify="left")
    for col in ("kernel", "worst wait", "slowdown", "yields", "populate", "alone", "front"):
        t.add_column(col, justify="left" if col == "kernel" else "right")
    for p in res.points:
        ys = sorted(p.yields)
        t.add_row(p.kernel + (" (reference)" if p.reference else ""),
                  f"{p.wait_ms:.2f} ms" if p.wait_ms is not None else "-",
                  f"{p.slowdown:.3f}x" if p.slowdown is not None else "-",
                  str(ys[len(ys) // 2]) if ys else "-",
                  f"{sorted(p.populate_ms)[len(p.populate_ms) // 2]:.1f} ms" if p.populate_ms else "-",
                  f"{sorted(p.alone_ms)[len(p.alone_ms) // 2]:.1f} ms" if p.alone_ms else "-",
                  "*" if p.pareto else "")
    console.print(t)
    console.print("times are modelled; a point is the median over its repeats; " + dilation_text(res.runs),
                  style="dim", highlight=False)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**res.as_dict(), "costs": args.costs.as_dict()}, f, indent=1, default=str)
        console.print(f"wrote {args.json}", highlight=False)
    if args.plot:
        from mmlab.report.tune_plot import plot_tune
        plot_tune(res, args.plot)
        console.print(f"wrote {args.plot}", highlight=False)
    failed = [p for p in res.points if p.errors]
    for p in failed:
        print(f"{p.kernel}: {p.errors[0]}", file=sys.stderr)
    if any("hang" in e for p in failed for e in p.errors):
        return 3
    return 1 if failed else 0
