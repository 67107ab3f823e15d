"""`mmlab calibrate`: measure the cost model's constants on this machine's kernel.

The cost model (mmlab/clock.py ``Costs``) charges each piece of kernel work -- zeroing and
mapping an anonymous page, mapping a cached file page, reading a read-ahead window, zapping a
page on munmap -- while the model holds what the kernel would hold. Its built-in constants were
measured once on another machine. This command times the real system calls here (through the
real backend, mmlab/real/calibrate.py: medians over repeats, a cold page cache by
posix_fadvise(POSIX_FADV_DONTNEED), sizes checked against MemAvailable) and writes a cost
profile that every command that takes costs then uses: ``--costs FILE``, ``$MMLAB_COSTS``, or the
default location. Each report's header says which costs it ran with.

Exit status: 0 written; 2 bad arguments or the real backend unavailable (nothing run); 130 Ctrl-C
(nothing written).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import sys
import time
from typing import Any, Optional

from mmlab.costprofile import COST_FIELDS, ENV_VAR, CostProfileError, default_path, dumps, save
from mmlab.clock import DEFAULT_COSTS, Costs

__all__ = ["register", "run"]

DEFAULT_SIZES = "64M,256M,1G"
CHECK_TOLERANCE = 0.15
QUICK_SIZES = "64M,256M"

_WHAT = {
    "anon_page_ns": "MAP_POPULATE anonymous, per page (the populate's read hold)",
    "zap_anon_page_ns": "munmap of populated anonymous memory, per page",
    "zap_locked_page_ns": "munmap of MAP_LOCKED memory, per page",
    "file_page_ns": "MAP_POPULATE of a cached file, per page",
    "disk_window_ns": "cold-cache read per read-ahead window",
    "readahead_pages": "read_ahead_kb of the file's device / 4 KiB",
    "cow_page_ns": "private writable file populate minus file_page, per page",
    "zap_file_page_ns": "munmap of a shared file mapping, per page",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="measure the cost model's constants on this machine and write a cost profile",
                       description=__doc__.split("\n\n")[1] if __doc__ else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="Example: mmlab calibrate && mmlab latency --kernel v6.18 --populator populate-anon "
                       "--sizes 64M,256M,1G   (the header then says 'costs: calibrated ...')")
    p.add_argument("--out", metavar="FILE", default=None,
                   help=f"where to write the profile (default: ${ENV_VAR} if set, else {default_path()})")
    p.add_argument("--sizes", default=DEFAULT_SIZES, help=f"anonymous populate sizes (default {DEFAULT_SIZES})")
    p.add_argument("--file-size", default="256M", help="size of the file for the file-backed costs (default 256M)")
    p.add_argument("--repeats", type=int, default=5, help="measured calls per size; medians are kept (default 5)")
    p.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}, a 64M file, 3 repeats")
    p.add_argument("--no-file", action="store_true", help="skip the file-backed costs (they stay built-in)")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="what the CPU-bound costs keep: the calling thread's CPU time (default; what the work "
                   "costs on this hardware, however busy the machine is) or the wall time at this moment's load")
    p.add_argument("--dry-run", action="store_true", help="measure and print, write nothing")
    p.add_argument("--check", action="store_true",
                   help="then run the latency scenario (populate-anon, writer victim) on the real kernel and on "
                   "v6.18 with the new costs, at the same sizes, interleaved; exit 1 if a writer's worst wait "
                   f"differs by more than {CHECK_TOLERANCE * 100:.0f}%%")
    p.add_argument("--check-rounds", type=int, default=3, help="populates per size and side for --check (default 3)")
    p.add_argument("--json", metavar="FILE", help="also write the measurements as JSON")
    p.set_defaults(func=run)


def _bad(msg: str) -> int:
    print(f"mmlab calibrate: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from mmlab.report.console import console as report_console
    from rich.table import Table

    from mmlab.real.libc import unavailable_reason
    from mmlab.report.real_cmd import parse_sizes

    try:
        sizes = parse_sizes(QUICK_SIZES if args.quick else args.sizes)
        [fsize] = parse_sizes("64M" if args.quick else args.file_size)
    except ValueError as e:
        return _bad(str(e))
    repeats = 3 if args.quick else args.repeats
    if repeats < 1 or args.check_rounds < 1:
        return _bad("--repeats and --check-rounds must be >= 1")
    out = args.out or os.environ.get(ENV_VAR) or str(default_path())
    if not args.dry_run:
        d = os.path.dirname(os.path.abspath(out))
        probe = d
        while not os.path.exists(probe):
            probe = os.path.dirname(probe)
        if not os.access(probe, os.W_OK):
            return _bad(f"cannot write {out}: {probe} is not writable")
    why = unavailable_reason()
    if why:
        return _bad(f"the real backend is unavailable here: {why}")
    from mmlab.real.scenarios import memory_guard
    from mmlab.real.scenarios import READER_REGION
    refuse = memory_guard(max(max(sizes) + (0 if args.no_file else fsize), 2 * max(sizes) + READER_REGION if args.check
                              else 0) + (64 << 20), f"a {max(sizes) >> 20} MiB populate")
    if refuse:
        return _bad(refuse)

    from mmlab.real.calibrate import calibrate
    con = report_console(stderr=True)
    try:
        with con.status("calibrating") as st:
            cal = calibrate(tuple(sizes), repeats, fsize, files=not args.no_file, clock=args.clock,
                            progress=lambda s: st.update(f"calibrating: {s}"))
    except KeyboardInterrupt:
        con.print("interrupted: everything mapped is unmapped again; nothing written")
        return 130
    except OSError as e:
        con.print(f"mmlab calibrate: a measurement failed: {e}; nothing written")
        return 1

    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    host = socket.gethostname()
    console = report_console()
    t = Table(title=f"cost profile for kernel {cal.kernel} ({host}), {date}: median of {repeats} calls per size, "
              f"sizes {', '.join(f'{s >> 20}M' for s in sizes)}, {cal.clock} time; measured in {cal.elapsed_s:.1f} s")
    for c in ("cost", "built-in", "calibrated", "ratio", "spread", "what was timed"):
        t.add_column(c, justify="left" if c in ("cost", "what was timed") else "right")
    for f in COST_FIELDS:
        if f not in cal.costs:
            continue
        b, v = getattr(DEFAULT_COSTS, f), cal.costs[f]
        sp = cal.spread.get(f)
        t.add_row(f, f"{b:,}", f"{v:,}", f"{v / b:.2f}x" if b else "-",
                  "-" if sp is None else f"{sp * 100:.0f}%", _WHAT.get(f, ""))
    console.print(t)
    for f, s in cal.samples.items():
        if f.endswith("_cpu") or f not in ("anon_page", "zap_anon_page", "locked_page", "zap_locked_page"):
            continue
        c = cal.samples[f + "_cpu"].by_size()
        console.print(f"  {f} ns/page by size, wall (cpu): " + ", ".join(
            f"{sz >> 20}M {v:,.0f} ({c[sz]:,.0f})" for sz, v in s.by_size().items()))
    for n in cal.notes:
        console.print(f"[yellow]note[/]: {n}")
    wide = [f for f, sp in cal.spread.items() if sp > 0.25]
    if wide:
        console.print(f"[yellow]spread over 25% for {', '.join(wide)}[/]: the machine was busy or the disk "
                      "cache did not drop; rerun with more --repeats")
    comments = {f: _WHAT[f] for f in cal.costs if f in _WHAT}
    text = dumps(cal.costs, kernel=cal.kernel, date=date, host=host, spread=cal.spread,
                 measured={**cal.measured(), "repeats": repeats, "clock": cal.clock}, comments=comments)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"kernel": cal.kernel, "date": date, "host": host, "costs": cal.costs, "spread": cal.spread,
                       "builtin": {f: getattr(DEFAULT_COSTS, f) for f in cal.costs},
                       "per_size": {n: {str(sz): v for sz, v in s.by_size().items()} for n, s in cal.samples.items()},
                       "notes": cal.notes, "out": None if args.dry_run else os.path.abspath(out)}, fh, indent=2)
    if args.dry_run:
        console.print("--dry-run: nothing written")
    else:
        try:
            p = save(out, text)
        except (OSError, CostProfileError) as e:
            return _bad(f"cannot write {out}: {e}")
        _written(console, p, out)
    if args.check:
        from mmlab.costprofile import load
        costs = dataclasses.replace(DEFAULT_COSTS, **cal.costs) if args.dry_run else load(out).costs
        return check(console, con, costs, sizes, args.check_rounds, args.json)
    return 0


def _written(console: Any, p: Any, out: str) -> None:
    default = os.environ.get(ENV_VAR) or str(default_path())
    if os.path.abspath(out) == os.path.abspath(default):
        console.print(f"written {p}: every command that takes costs now uses it by default (--costs builtin: not)")
    else:
        console.print(f"written {p}: use it with --costs {p} (or {ENV_VAR}={p})")


def check(console: Any, status: Any, costs: Costs, sizes: list[int], rounds: int, json_path: Optional[str]) -> int:
    """The writer victim's worst wait (median over rounds of each round's p99.9) while a
    populate-anon runs, on the real kernel and on v6.18 with *costs*: the same procedure
    (mmlab.real.scenarios), the two sides interleaved size by size so they share the machine's
    load. Exit 1 when a size differs by more than CHECK_TOLERANCE."""
    from rich.table import Table
    from mmlab.real import scenarios as S

    pop = S.POPULATORS["populate-anon"]
    real = S.RealTarget()  # the kernel's own mmap_lock waits where tracing is available, else wall clock
    from mmlab.harness.dilation import HANDOFF_TARGET_NS, RESIDUAL_TARGET_NS, choose_dilation
    # the model on a dilated clock (mmlab.harness.dilation; `mmlab latency --quick`'s targets):
    # its interpreter time counts 1/k, so its waits are the calibrated costs and the lock protocol
    dil = choose_dilation(costs, target_ns=8 * RESIDUAL_TARGET_NS, handoff_target_ns=8 * HANDOFF_TARGET_NS)
    model = S.ModelTarget("v6.18", costs, lock_waits=real.lock_waits, dilation=dil.k)  # its lock records alike
    rows = []
    timing = "wall"
    try:
        for size in sizes:
            cell = {}
            for t in (real, model):
                with status.status(f"check: {t.name} populate-anon {size >> 20}M x {rounds}"):
                    r = S.run_latency_cell(t, pop, size, rounds)
                if r.get("error"):
                    raise OSError(r["error"])
                seen = "writer" not in r.get("not_observed", ())  # the writer asked while the populate held
                cell[t.name] = (r["victim"]["writer"].get("worst_us", 0.0) / 1e3 if seen else None, r["populate_ms"])
                timing = r.get("timing", "wall") if t is real else timing
            rows.append((size, cell["real"], cell[model.name]))
    finally:
        real.close()
        model.close()
    load = os.getloadavg()[0]
    t = Table(title=f"check: writer's worst wait during populate-anon, real kernel vs v6.18 with these costs "
              f"(median of {rounds} rounds; real waits {timing}; the model's clock dilated k={dil.k:.1f}; load average "
              f"{load:.1f} on {os.cpu_count()} CPUs)")
    for c in ("size", "real ms", "v6.18 ms", "diff", f"within {CHECK_TOLERANCE:.0%}", "real populate ms",
              "v6.18 populate ms"):
        t.add_column(c, justify="right")
    bad = 0
    out = []
    for size, (rw, rp), (mw, mp) in rows:
        if rw is None or mw is None:  # a side whose writer never waited on the populate: nothing compared
            bad += 1
            t.add_row(f"{size >> 20}M", "not observed" if rw is None else f"{rw:.1f}",
                      "not observed" if mw is None else f"{mw:.1f}", "-", "[red]not observed[/]", f"{rp:.1f}",
                      f"{mp:.1f}")
            out.append({"size_bytes": size, "real_worst_ms": rw, "model_worst_ms": mw, "diff": None, "within": False,
                        "real_populate_ms": rp, "model_populate_ms": mp})
            continue
        d = (mw - rw) / rw if rw > 0 else float("inf")
        ok = abs(d) <= CHECK_TOLERANCE
        bad += not ok
        t.add_row(f"{size >> 20}M", f"{rw:.1f}", f"{mw:.1f}", f"{d:+.0%}", "[green]yes[/]" if ok else "[red]no[/]",
                  f"{rp:.1f}", f"{mp:.1f}")
        out.append({"size_bytes": size, "real_worst_ms": rw, "model_worst_ms": mw, "diff": d, "within": ok,
                    "real_populate_ms": rp, "model_populate_ms": mp})
    console.print(t)
    if load > (os.cpu_count() or 1):
        console.print(f"[yellow]load average {load:.1f} on {os.cpu_count()} CPUs[/]: the real side's waits include "
                      "the time other tasks held the CPUs (and the GIL's holder), the model's do not; rerun the "
                      "check on a quieter machine before trusting a difference")
    if json_path:
        with open(json_path) as fh:
            doc = json.load(fh)
        doc["check"] = {"rows": out, "tolerance": CHECK_TOLERANCE, "load_average": load, "rounds": rounds,
                        "timing": timing, "dilation": dil.as_dict()}
        with open(json_path, "w") as fh:
            json.dump(doc, fh, indent=2)
    return 1 if bad else 0
