"""`mmlab latency`: the Lutomirski-style latency report.

For each kernel profile, populator and populate size, run a populating thread beside a faulting
reader thread and an mmap/mprotect/munmap writer thread on one MM, and print -- per populator --
the victims' mmap_sem waits (p50/p99/p99.9/max, from the model's lock records) with the
populator's own time, a noise floor (the victims alone), and a verdict per kernel, populator and
victim: bounded or unbounded, from how the worst wait grows with the populate size. Each populate
also runs alone (no victims): its slowdown beside the victims is what bounding the writer costs
the populating thread, and each policy's line reads "writer bounded (<= x ms), populate y x slower".

Times are modelled time on a dilated clock: modelled costs run k times slower than the real
clock and every time is divided by k, so the interpreter's per-call overhead counts only 1/k
(the "residual" printed first; k is calibrated at start, see --dilation). --time-scale shrinks
the modelled costs; the residual target shrinks with it, so k grows by the same factor.

Exit status: 0 done; 1 with ``--expect-bounded`` when any verdict is unbounded, or when a task
raised; 2 bad arguments (nothing run); 3 a hang (the watchdog's hard limit).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from typing import Optional

from mmlab.report.costs_arg import add_costs_argument

__all__ = ["register", "run", "parse_size", "parse_sizes"]

DEFAULT_SIZES = "16M,64M,256M"
QUICK_TIME_SCALE = 0.5

_UNITS = {"": 1 << 20, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """``16M``, ``1G``, ``512K``, or a bare number of MiB; a positive multiple of 4 KiB."""
    m = re.fullmatch(r"\s*(\d+)\s*([KkMmGg]?)(?:i?[Bb])?\s*", text)
    if not m:
        raise ValueError(f"bad size {text!r} (use e.g. 16M, 1G, 512K)")
    n = int(m.group(1)) * _UNITS[m.group(2).upper()]
    if n <= 0 or n % 4096:
        raise ValueError(f"size {text!r} must be a positive multiple of 4K")
    return n


def parse_sizes(text: str) -> list[int]:
    sizes = sorted({parse_size(s) for s in text.split(",") if s.strip()})
    if len(sizes) < 2:
        raise ValueError("--sizes needs at least two different sizes: a verdict reads growth with size")
    return sizes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "latency", help="victims' mmap_sem waits while a populate runs, per kernel: bounded or not",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: mmlab latency --quick --kernel v3.9,v6.18,bounded --populator populate-anon,populate-file")
    p.add_argument("--kernel", default="all", help="comma-separated profiles, with switches "
                   "(v3.9+populate_after_unlock=off); default: all")
    p.add_argument("--populator", default="all", help="comma-separated populators; default: all")
    p.add_argument("--sizes", default=DEFAULT_SIZES, help=f"populate sizes (default {DEFAULT_SIZES})")
    p.add_argument("--time-scale", type=float, default=None,
                   help=f"cost multiplier: 1 is the real kernel's speed (default 1; {QUICK_TIME_SCALE} with --quick)")
    p.add_argument("--quick", action="store_true", help="the default report at a reduced time scale (<= 60 s)")
    add_costs_argument(p)
    p.add_argument("--stall-ms", type=float, default=100.0,
                   help="watchdog: report a task waiting longer than this for mmap_sem (default 100)")
    p.add_argument("--hang-ms", type=float, default=30_000.0,
                   help="watchdog hard limit: a wait this long is a hang, exit 3 (default 30000)")
    p.add_argument("--seed", type=int, default=None, help="seed for the victims' choices (default: random, printed)")
    p.add_argument("--rounds", type=int, default=1, help="populate calls per run (default 1)")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs per size; verdicts take the stall seen in every run (default 1)")
    p.add_argument("--interval-us", type=float, default=250.0,
                   help="victims run open loop, one call per interval, corrected for coordinated omission "
                   "(default 250)")
    p.add_argument("--closed-loop", action="store_true",
                   help="victims call back to back instead (as the real-kernel measurement did)")
    p.add_argument("--noise-ms", type=float, default=250.0, help="length of each noise-floor run (default 250)")
    p.add_argument("--victims", default="fault,writer",
                   help="comma-separated victims (default fault,writer): fault (a reader faulting its own "
                   "pages), writer (one-page mmap/mprotect/munmap elsewhere), vma-writer (mprotect of the "
                   "populated range's last page to PROT_NONE and back: the writer whose range overlaps the "
                   "populate, which waits for it even under populate_vma_lock)")
    add_time_args(p)
    p.add_argument("--json", metavar="FILE", help="write every number as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="plot worst wait vs size and one run's timeline (matplotlib)")
    p.add_argument("--perfetto", metavar="FILE.json",
                   help="write every run's lock waits and holds inside its calls, a track per task, as Chrome "
                   "trace-event JSON (ui.perfetto.dev, chrome://tracing)")
    p.add_argument("--expect-bounded", action="store_true", help="exit 1 if any verdict is unbounded")
    p.add_argument("--quiet-stalls", action="store_true", help="record watchdog reports without printing them")
    p.set_defaults(func=run)


def add_time_args(p: argparse.ArgumentParser) -> None:
    """--dilation, --residual-us, --burn-us: shared with `mmlab tune` and `mmlab stress`."""
    p.add_argument("--dilation", default="auto", metavar="auto|K|off",
                   help="time dilation: modelled costs run K times slower on the real clock and times are "
                   "divided by K, so interpreter time counts 1/K; auto (default) calibrates K from the "
                   "measured per-call overhead and --residual-us; off: K=1 (interpreter time counts in full)")
    p.add_argument("--residual-us", type=float, default=None,
                   help="auto dilation: interpreter time per call allowed into modelled time at time scale 1 "
                   "(default 1; 8 with --quick); a yield's overhead is allowed 10x as much")
    p.add_argument("--burn-us", type=float, default=0.0,
                   help="test switch: spin this long (holding the GIL) at every syscall entry, as a slower "
                   "interpreter would; auto dilation measures it with the rest")


def parse_dilation(text: object) -> Optional[float]:
    """--dilation: None for auto, 1.0 for off, else K (>= 1); a ValueError names the option."""
    t = str(text).strip().lower()
    if t == "auto":
        return None
    if t == "off":
        return 1.0
    try:
        k = float(t)
    except ValueError:
        raise ValueError(f"--dilation takes auto, off or a number >= 1, not {text!r}") from None
    if not k >= 1:
        raise ValueError(f"--dilation must be >= 1, not {text!r}")
    return k


def make_dilation(args: argparse.Namespace, ts: float, quick: bool = False) -> object:
    """The Dilation for *args*, or a ValueError (then nothing is changed). Sets the burn switch
    (mmlab.clock.hooks.syscall_burn_ns) before calibrating; the caller resets it."""
    from mmlab.clock import DEFAULT_COSTS, hooks
    from mmlab.harness.dilation import HANDOFF_TARGET_NS, RESIDUAL_TARGET_NS, choose_dilation

    if args.burn_us < 0:
        raise ValueError("--burn-us must be >= 0")
    res_us = args.residual_us if args.residual_us is not None else (8.0 if quick else RESIDUAL_TARGET_NS / 1e3)
    if not res_us > 0:
        raise ValueError("--residual-us must be > 0")
    k = parse_dilation(args.dilation)
    hooks.syscall_burn_ns = int(args.burn_us * 1e3)
    loose = res_us * 1e3 / RESIDUAL_TARGET_NS  # --residual-us (and --quick) loosen both targets alike
    costs = getattr(args, "costs", None)  # a CostProfile (--costs), else the built-in costs
    return choose_dilation((costs.costs if costs is not None else DEFAULT_COSTS).scaled(ts), k=k, target_ns=res_us * 1e3 * ts, burn_ns=hooks.syscall_burn_ns,
                           handoff_target_ns=HANDOFF_TARGET_NS * loose * ts)


def _bad(msg: str) -> int:
    print(f"mmlab latency: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from mmlab.harness.populators import get_populators
    from mmlab.kernels import parse_kernels

    try:
        kernels = parse_kernels(args.kernel)
        populators = get_populators(args.populator)
        sizes = parse_sizes(args.sizes)
    except ValueError as e:
        return _bad(str(e))
    if not kernels or not populators:
        return _bad("no kernel or no populator selected")
    ts = args.time_scale if args.time_scale is not None else (QUICK_TIME_SCALE if args.quick else 1.0)
    if not ts > 0:
        return _bad("--time-scale must be > 0")
    if not args.stall_ms > 0 or not args.hang_ms > args.stall_ms:
        return _bad("--stall-ms must be > 0 and --hang-ms above it")
    if args.rounds < 1 or args.repeats < 1 or not args.interval_us > 0 or not args.noise_ms > 0:
        return _bad("--rounds and --repeats must be >= 1, --interval-us and --noise-ms > 0")
    if args.plot and not _have_plot():
        return _bad("--plot needs matplotlib: pip install 'mmlab[plot]' (or matplotlib)")
    from mmlab.harness.victims import parse_victims
    try:
        args.victim_names = parse_victims(args.victims)
    except ValueError as e:
        return _bad(str(e))
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    try:
        dil = make_dilation(args, ts, args.quick)
    except ValueError as e:
        return _bad(str(e))
    try:
        return _report(args, kernels, populators, sizes, ts, seed, dil)
    finally:
        from mmlab.clock import hooks
        hooks.syscall_burn_ns = 0


def _have_plot() -> bool:
    from mmlab.report.latency_plot import have_matplotlib
    return have_matplotlib()


def _report(args: argparse.Namespace, kernels: list, populators: list, sizes: list[int], ts: float,
            seed: int, dil: object) -> int:
    from mmlab.harness.latency import LatencyConfig, RunResult, dilation_text, policy_costs, run_latency
    from mmlab.report.latency_tables import fmt_us, populator_table, size_text, verdict_table

    from mmlab.report.console import console as report_console
    console = report_console()  # a log or a pipe: tables at their width, names whole
    err = report_console(stderr=True)
    tty = console.is_terminal
    timeline_for = (kernels[0].name, populators[0].name, max(sizes)) if args.plot else None

    def stall_out(text: str) -> None:
        if not args.quiet_stalls:
            err.print(text, markup=False, highlight=False)

    cfg = LatencyConfig(kernels, populators, sizes, costs=args.costs.scaled(ts), stall_ms=args.stall_ms,
                        hang_ms=args.hang_ms, seed=seed, rounds=args.rounds, repeats=args.repeats,
                        interval_ns=None if args.closed_loop else int(args.interval_us * 1e3),
                        noise_s=args.noise_ms / 1e3, timeline_for=timeline_for, watchdog_out=stall_out,
                        dilation=dil, victims=args.victim_names)  # type: ignore[arg-type]
    perfetto: list[dict] = []
    if args.perfetto:
        from mmlab.report.perfetto import model_events

        def keep(r: RunResult, mm: object) -> None:  # events now: the MM itself is not kept
            what = f"{r.populator} {size_text(r.size_bytes)}" if r.populator else "noise floor"
            label = f"{r.kernel} {what}" + (f" #{r.repeat}" if r.repeat else "")
            perfetto.extend(model_events(mm, label, pid=len({e['pid'] for e in perfetto}) + 1))
        cfg.on_run = keep
    console.print(f"mmlab latency: kernels {', '.join(k.name for k in kernels)}; populators "
                  f"{', '.join(p.name for p in populators)}; sizes {', '.join(size_text(s) for s in sizes)}; "
                  f"time scale {ts:g}; victims "
                  f"{'closed loop' if args.closed_loop else f'open loop every {args.interval_us:g} us'}; seed {seed}",
                  highlight=False)
    console.print(args.costs.header, highlight=False)
    console.print(dil.text(), highlight=False)  # type: ignore[attr-defined]

    def line(kind: str, r: RunResult, done: int, total: int) -> str:
        if kind == "alone":
            return f"[{done}/{total}] {r.kernel} {r.populator} {size_text(r.size_bytes)} alone: " \
                f"populate {fmt_us(r.populate_ms * 1e3)}"
        what = f"{r.kernel} noise floor" if kind == "noise floor" else \
            f"{r.kernel} {r.populator} {size_text(r.size_bytes)}: populate {fmt_us(r.populate_ms * 1e3)}"
        if r.slowdown is not None:
            what += f" ({r.slowdown:.2f}x alone)"
        worst = ", ".join(f"{op} {fmt_us(r.worst_wait_us(op))}" for op in ("fault", "writer") if op in r.victim)
        extra = "" if r.reason in ("done", "duration") else f" [{r.reason}]"
        return f"[{done}/{total}] {what}; worst wait {worst}{extra}"

    try:
        if tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console, transient=True) as prog:
                tid = prog.add_task("starting", total=None)

                def progress(kind: str, r: RunResult, done: int, total: int) -> None:
                    prog.update(tid, total=total, completed=done, description=line(kind, r, done, total))
                res = run_latency(cfg, progress)
        else:
            def progress(kind: str, r: RunResult, done: int, total: int) -> None:
                print(line(kind, r, done, total), flush=True)
            res = run_latency(cfg, progress)
    except KeyboardInterrupt:
        raise  # cli.main turns it into exit 130; task threads are daemons and stop with the process
    for name, why in res.skipped.items():
        console.print(f"skipped {name}: {why}", highlight=False)
    for p in populators:
        if p.name in res.skipped:
            continue
        console.print(populator_table(res, p.name))
    console.print(verdict_table(res))
    for pc in policy_costs(res):
        console.print(f"{pc.kernel} {pc.populator} {size_text(pc.size_bytes)}: {pc.text}", highlight=False)
    console.print("waits are the model's lock-record waits (acquired - requested); 'max wall' is the "
                  "victim call's time, interpreter included; 'noise' rows are the victims alone; 'alone' is "
                  "the populate with no victims, 'slowdown' populate / alone. All in modelled time: "
                  + dilation_text(res.runs + res.noise + res.alone), style="dim", highlight=False)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**res.as_dict(), "costs": args.costs.as_dict()}, f, indent=1, default=str)
        console.print(f"wrote {args.json}", highlight=False)
    if args.plot:
        from mmlab.report.latency_plot import plot_latency
        tl = next((r for r in res.runs if r.spans), None)
        plot_latency(res, args.plot, tl)
        console.print(f"wrote {args.plot}", highlight=False)
    if args.perfetto:
        from mmlab.report.perfetto import write_events
        n = write_events(args.perfetto, perfetto, {"source": "mmlab latency (model)", "seed": seed})
        console.print(f"wrote {args.perfetto} ({n:,} trace events; open in ui.perfetto.dev)", highlight=False)
    for r in res.failed:
        err.print(f"{r.kernel} {r.populator} {size_text(r.size_bytes) if r.size_bytes else 'noise'}: "
                  + "\n".join(r.errors), markup=False, highlight=False)
    if res.hung:
        err.print("a task hung: see the hang report above (and in the JSON under 'hangs')")
        return 3
    unbounded = [v for v in res.verdicts if not v.bounded]
    if args.expect_bounded and unbounded:
        err.print(f"--expect-bounded: {len(unbounded)} unbounded verdict(s): " +
                  ", ".join(f"{v.kernel}/{v.populator}/{v.op}" for v in unbounded), highlight=False)
        return 1
    if res.failed:
        return 1
    return 0

