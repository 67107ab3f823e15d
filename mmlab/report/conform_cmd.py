"""`mmlab conform`: the model's lock protocol against the real kernel's, call by call.

Each catalogue entry (:data:`mmlab.real.conform.CATALOGUE`) runs on this machine's kernel under
trace (the mmap_lock tracepoints) and on a model profile; each call's lock sequence is normalised
(``W R``, ``W ↓R``, ``W R×k``) and compared. Exit status 1 on a mismatch that no listed difference
explains in the table of the profile that claims this kernel by behaviour (mmlab.kernels.CLAIMS:
v6.18 on 6.17 and later, ``v6.18+madvise_vma_lock=off+mremap_move_multi_vma=off`` on 6.15-6.16,
...); other profiles get the same table as a report of what that kernel would have done. 3 when a child hangs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "conform", help="lock-protocol conformance: each call's mmap_lock sequence, real kernel vs model",
        description="Run a catalogue of mm calls (MAP_POPULATE of anonymous, shared and file memory, "
        "MAP_LOCKED, mlock, mlockall then mmap, munmap, mremap of a locked vma, madvise populate and "
        "DONTNEED, mprotect, a cold file populate, remap_file_pages, brk under MCL_FUTURE, user page faults) on this "
        "machine's kernel, traced through its mmap_lock tracepoints (needs root and tracefs), and on a "
        "model profile. Each call's lock sequence is normalised (W = write hold, R = read hold, ↓R = "
        "downgrade_write, R✗ = failed trylock, ×k = k holds in a row, — = mmap_lock not taken) and "
        "compared; counts of repeated holds within an entry's stated tolerance. Deliberate differences "
        "are listed with their reason and excuse only what their own check explains.",
        epilog="Exit status: 0 every call agrees with the profile that claims this kernel (or is a listed "
        "difference); 1 an unexplained mismatch or an error (a call not seen in the trace, lost events, a child "
        "that failed) in that profile's table; 2 bad arguments or tracing unavailable; 3 a child hung. "
        "Examples: `mmlab conform`, `mmlab conform --entry munmap,brk`, "
        "`mmlab conform --kernel v6.18,v3.7,v6.18+munmap_downgrade=off`.")
    p.add_argument("--kernel", default="",
                   help="comma-separated profiles to compare (default: the one that claims this kernel by "
                   "behaviour, mmlab.kernels.CLAIMS; v6.18 as a report when none does); only that profile's "
                   "table sets the exit status, the others are reports")
    p.add_argument("--entry", action="append", default=[], metavar="NAME",
                   help="run only these catalogue entries (repeat or comma-separate); see --list")
    p.add_argument("--list", action="store_true", help="list the catalogue and the stated tolerances, run nothing")
    p.add_argument("--model-only", action="store_true",
                   help="show the model's sequences only (no tracing needed; no verdicts, exit 0)")
    p.add_argument("--json", metavar="FILE", help="write the tables, the real side's trace counts and the "
                   "listed differences as JSON")
    p.set_defaults(func=run)


def _console() -> Any:
    from mmlab.report.console import console
    return console(highlight=False)  # a log or CI: tables at their width, names whole (report/console.py)


def _err(msg: str) -> int:
    print(f"mmlab conform: {msg}", file=sys.stderr)
    return 2


_STYLE = {"agree": "green", "tolerance": "green", "known": "yellow", "MISMATCH": "bold red", "error": "bold red",
          "report": "cyan", "model": ""}


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from mmlab.kernels import get_kernel
    from mmlab.real import conform as C

    names = [n.strip() for x in args.entry for n in x.split(",") if n.strip()]
    claimed = C.reference()
    try:
        entries = C.select(names)
        specs = [s.strip() for s in args.kernel.split(",") if s.strip()] or [claimed or "v6.18"]
        for s in specs:
            get_kernel(s)
    except ValueError as e:
        return _err(str(e))
    con = _console()
    if args.list:
        t = Table(title="mmlab conform: the catalogue", show_lines=False)
        t.add_column("entry", no_wrap=True)
        t.add_column("what", overflow="fold")
        t.add_column("count tolerance / isolation", overflow="fold")
        for e in entries:
            notes = [e.tolerance.describe()] if e.tolerance else []
            if e.isolated:
                notes.append(f"own child process: {e.why_isolated}")
            t.add_row(e.name, e.what, "; ".join(notes) or "exact")
        con.print(t)
        if C.KNOWN_PROTOCOL:
            for k in C.KNOWN_PROTOCOL:
                con.print(f"listed difference {k.name}: {k.reason}")
        else:
            con.print("listed differences: none (every v6.18 sequence is expected to match the kernel's)")
        return 0

    ra_kb = C.device_readahead_kb(C.file_dir())
    costs = C.model_costs(ra_kb)
    real: Optional[dict[str, dict[str, Any]]] = None
    release = os.uname().release
    if not args.model_only:
        from mmlab.trace import unavailable_reason
        why = unavailable_reason()
        if why:
            return _err(f"cannot trace here: {why} (--model-only shows the model's side)")
        import subprocess
        try:
            with con.status("tracing the catalogue on the real kernel") as status:
                real = C.run_real(entries, progress=lambda what: status.update(f"real kernel: {what}"))
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
        except subprocess.TimeoutExpired as e:
            print(f"mmlab conform: hang: the conformance child did not finish within {e.timeout:.0f} s "
                  f"(killed; nothing compared)", file=sys.stderr)
            return 3
        except RuntimeError as e:
            print(f"mmlab conform: {e}", file=sys.stderr)
            return 1
    rep = C.conform(specs, entries, real, costs)
    rc = 0
    for kt in rep["kernels"]:
        ref = kt["reference"]
        if args.model_only:
            title = f"mmlab conform: model {kt['kernel']} (model only, not compared)"
        elif ref:
            title = f"mmlab conform: real kernel {release} vs model {kt['kernel']}"
        else:
            title = (f"mmlab conform: real kernel {release} vs model {kt['kernel']} "
                     f"(a report of what {kt['kernel']} would have done; no effect on the exit status)")
        t = Table(title=title)
        t.add_column("entry", no_wrap=True)
        t.add_column("call", overflow="fold")
        if not args.model_only:
            t.add_column(f"real {release}", overflow="fold")
        t.add_column(f"model {kt['kernel']}", overflow="fold")
        if not args.model_only:
            t.add_column("verdict", no_wrap=True)
            t.add_column("note", overflow="fold")
        for r in kt["rows"]:
            v = r["verdict"]
            if args.model_only:
                t.add_row(r["entry"], r["label"], r["model"])
                continue
            shown = v if ref or v not in ("MISMATCH",) else "differs"
            style = _STYLE.get(v, "") if ref else ("cyan" if v == "MISMATCH" else _STYLE.get(v, ""))
            t.add_row(r["entry"], r["label"], r["real"], r["model"], f"[{style}]{shown}[/]" if style else shown,
                      r["note"])
        con.print(t)
        if not args.model_only:
            n = len(kt["rows"])
            counts = {v: sum(1 for r in kt["rows"] if r["verdict"] == v)
                      for v in ("agree", "tolerance", "known", "MISMATCH", "error")}
            con.print(f"{kt['kernel']}: {counts['agree']}/{n} calls agree, {counts['tolerance']} within a stated "
                      f"count tolerance, {counts['known']} listed differences, {counts['MISMATCH']} mismatches, "
                      f"{counts['error']} errors" + ("" if ref else " (report only)"))
            if ref and kt["unexplained"]:
                rc = 1
    if not args.model_only:
        if claimed is None:
            con.print(f"no profile claims kernel {release} (mmlab.kernels.CLAIMS): every table is a report, "
                      f"none sets the exit status")
        # the entries of one child share its trace and its lost count: once per child
        lost = sum({r.get("group", n): r.get("lost", 0) for n, r in (real or {}).items()}.values())
        con.print(f"model read-ahead window: {costs.readahead_pages} pages (the device's read_ahead_kb: "
                  f"{ra_kb if ra_kb is not None else 'unknown'}); trace events lost: {lost}")
        tols = {e.tolerance.describe() for e in entries if e.tolerance}
        for d in sorted(tols):
            con.print(f"tolerance: {d}")
        if not C.KNOWN_PROTOCOL:
            con.print("listed differences: none")
    if args.json:
        doc = {"release": release, "claimed_by": claimed, "readahead_kb": ra_kb,
               "model_readahead_pages": costs.readahead_pages,
               "entries": [e.name for e in entries], "exit": rc, **rep,
               "tolerances": {e.name: e.tolerance.describe() for e in entries if e.tolerance},
               "known": [{"name": k.name, "reason": k.reason} for k in C.KNOWN_PROTOCOL],
               "real": None if real is None else {
                   n: {"error": r.get("error"), "lost": r.get("lost", 0), "counts": r.get("counts", {}),
                       "steps": [{"label": s.label, "call": s.call, "args": list(s.args), "ret": s.ret,
                                  "error": s.error, "shape": str(s.shape),
                                  "hold_us": [round(h, 1) for h in s.hold_us]} for s in r["steps"]]}
                   for n, r in real.items()}}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    return rc
