"""`mmlab trace`: the real kernel's mmap_lock waits in any program, who they waited behind, and why.

Runs CMD (or attaches to --pid) under a private tracing instance with the kernel's own mmap_lock
events (start_locking, acquire_returned, released) and the mm syscalls' entries and exits, then
prints -- per thread -- the count and p50/p99/max of its mmap_lock waits, and the worst waits,
each attributed to the threads holding the lock meanwhile: mode, how long they held it, and in
which call with its arguments decoded (e.g. `mmap(0, 1 GiB, RW, PRIVATE|ANONYMOUS|POPULATE)`); a
reader queued behind a waiting writer is named as such. Waits are start_locking -> acquire_returned
on the waiting thread, in CLOCK_MONOTONIC nanoseconds from the binary per-CPU buffers.

Exit status: CMD's own (128+N when a signal N killed it); 0 for --pid; 2 bad arguments, a CMD
that is not an executable program, or tracing unavailable (nothing run); 127 when exec of CMD
failed all the same (no report); 130 on Ctrl-C, 143 on SIGTERM (the report of what was captured is
still printed, the tracing instance is removed); 1 (instead of 0) when the capture failed or its
tracing instance could not be removed (the error is on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shlex
import shutil
import signal
import sys
import time
from typing import Optional

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "trace", help="trace a real program's mmap_lock waits (kernel tracepoints) and name who held the lock",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  mmlab trace -- ./myprog --threads 4\n"
               "  mmlab trace --pid 1234 --duration 10 --stall-ms 20 --json waits.json\n"
               "  mmlab trace --perfetto run.json -- python3 app.py   (open run.json in ui.perfetto.dev)\n"
               "Needs root and tracefs (mounted at /sys/kernel/tracing if it is not).\n"
               "Exit status: CMD's own (128+N if signal N killed it); 0 with --pid; 2 bad arguments, CMD not "
               "found, or tracing unavailable; 127 exec of CMD failed; 130 Ctrl-C, 143 SIGTERM (the report "
               "of what was captured is printed); 1 instead of 0 when the capture failed or its tracing "
               "instance could not be removed.")
    p.add_argument("--pid", type=int, help="attach to this running process (all its threads) instead of running CMD")
    p.add_argument("--duration", type=float, default=None,
                   help="with --pid: seconds to trace (default: until it exits or Ctrl-C)")
    p.add_argument("--buffer-kb", type=int, default=8192, help="per-CPU trace buffer in KiB (default 8192)")
    p.add_argument("--stall-ms", type=float, default=None, help="also list every wait longer than this")
    p.add_argument("--worst", type=int, default=5, help="how many worst waits to attribute (default 5)")
    p.add_argument("--no-faults", action="store_true", help="do not trace user page faults")
    p.add_argument("--text", action="store_true",
                   help="read the trace_pipe text instead of the binary buffers (microsecond timestamps; the "
                   "kernel formats every event, about 1.7 us of CPU a line)")
    p.add_argument("--json", metavar="FILE", help="write threads, worst waits, stalls, counts and lost events as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw holds and waits per thread on a timeline (matplotlib)")
    p.add_argument("--perfetto", metavar="FILE.json",
                   help="write a Chrome trace-event timeline (ui.perfetto.dev, chrome://tracing)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS]", help="the program to run and trace")
    p.set_defaults(func=run)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, taken the way Ctrl-C is (the capture is stopped and its instance removed)."""


def _on_term(signum: int, frame: object) -> None:
    raise _Terminated()


def _bad(msg: str) -> int:
    print(f"mmlab trace: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from mmlab.trace import unavailable_reason

    cmd = list(args.cmd or [])
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if bool(cmd) == (args.pid is not None):
        return _bad("give either -- CMD [ARGS] or --pid PID")
    if args.duration is not None and (args.pid is None or not args.duration > 0):
        return _bad("--duration goes with --pid and must be > 0")
    if args.buffer_kb < 4:
        return _bad("--buffer-kb must be at least 4")
    if args.stall_ms is not None and not args.stall_ms > 0:
        return _bad("--stall-ms must be > 0")
    if args.worst < 0:
        return _bad("--worst must be >= 0")
    if args.plot:
        from mmlab.report.latency_plot import have_matplotlib
        if not have_matplotlib():
            return _bad("--plot needs matplotlib: pip install 'mmlab[plot]' (or matplotlib)")
    if args.pid is not None and not os.path.isdir(f"/proc/{args.pid}"):
        return _bad(f"no process {args.pid}")
    if cmd and _executable(cmd[0]) is None:
        return _bad(f"{cmd[0]}: no such program (not an executable file"
                    f"{'' if '/' in cmd[0] else ' on PATH'})")
    why = unavailable_reason()
    if why:
        return _bad(f"tracing unavailable: {why}")
    old = signal.signal(signal.SIGTERM, _on_term)
    try:
        if cmd:
            return _run_cmd(args, cmd)
        return _run_pid(args)
    finally:
        signal.signal(signal.SIGTERM, old)


def _executable(prog: str) -> Optional[str]:
    """The file execvp would run for *prog* (a path when it has a slash, else a PATH search)."""
    if "/" in prog:
        return prog if os.path.isfile(prog) and os.access(prog, os.X_OK) else None
    return shutil.which(prog)


def _capture_failed(e: BaseException) -> None:
    print(f"mmlab trace: error: {e}", file=sys.stderr, flush=True)


def _status(ws: int) -> int:
    code = os.waitstatus_to_exitcode(ws)
    return 128 - code if code < 0 else code


def _run_cmd(args: argparse.Namespace, cmd: list[str]) -> int:
    """Fork; the child waits on a pipe until the capture is set up on its pid, then execs CMD."""
    from mmlab.trace import Capture

    r, w = os.pipe()
    er, ew = os.pipe2(os.O_CLOEXEC)  # closed by a successful exec; an errno number if it failed
    # SIGINT/SIGTERM blocked across the fork: until the child has reset them, one sent to it (our
    # SIGTERM forwarding, a Ctrl-C) would run our Python handler there and exit 127, not die of it
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    if pid == 0:  # the child: no Python cleanup on any path out
        try:
            # the signal dispositions a program expects (Python ignores SIGPIPE and SIGXFSZ,
            # and an ignored signal stays ignored across exec), as subprocess's restore_signals
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a pending one now kills the child
            os.close(w)
            os.close(er)
            if os.read(r, 1) != b"x":
                os._exit(127)
            os.close(r)
            os.execvp(cmd[0], cmd)
        except OSError as e:
            os.write(ew, str(e.errno or 0).encode())
        except BaseException:  # noqa: BLE001
            pass
        os._exit(127)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    os.close(r)
    os.close(ew)
    cap = Capture(pid=pid, buffer_kb=args.buffer_kb, faults=not args.no_faults, name="trace", raw=not args.text,
                  allow_unknown_lost=True)
    status: Optional[int] = None
    interrupted = 0
    exec_errno = 0
    failed: Optional[BaseException] = None
    try:
        try:
            cap.start()
        except BaseException:
            os.close(w)
            os.close(er)
            os.waitpid(pid, 0)
            raise
        t0 = time.monotonic()
        try:
            os.write(w, b"x")
            os.close(w)
            got = os.read(er, 16)  # EOF at the exec (CLOEXEC), or the errno of a failed one
            os.close(er)
            if got:
                exec_errno = int(got) if got.isdigit() else 0
            else:
                print(f"mmlab trace: tracing {shlex.join(cmd)} (pid {pid}) in "
                      f"{cap.instance.name if cap.instance else '?'}", file=sys.stderr, flush=True)
            _, ws = os.waitpid(pid, 0)
            status = _status(ws)
        except KeyboardInterrupt as e:
            interrupted = 143 if isinstance(e, _Terminated) else 130
            if isinstance(e, _Terminated):  # Ctrl-C reached the whole process group; SIGTERM only us
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            status = _reap(pid)
        elapsed = time.monotonic() - t0
    finally:
        try:
            tr = cap.stop()
        except Exception as e:  # noqa: BLE001 - CaptureError: reported, and the exit status says so
            tr, failed = cap.trace, e
    if exec_errno:
        print(f"mmlab trace: error: cannot run {cmd[0]}: {os.strerror(exec_errno)}", file=sys.stderr)
        if failed is not None:
            _capture_failed(failed)
        return 127
    if tr is not None:
        _report(args, tr, f"{shlex.join(cmd)} (pid {pid})", elapsed, exit_status=status)
    if failed is not None:
        _capture_failed(failed)
    if interrupted:
        return interrupted
    if status is None:
        return 1
    return 1 if failed is not None and status == 0 else status


def _reap(pid: int) -> int:
    """After Ctrl-C (the child got SIGINT too): give it a moment, then SIGKILL; its status."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            p, ws = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 130
        if p:
            return _status(ws)
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
        _, ws = os.waitpid(pid, 0)
        return _status(ws)
    except (ProcessLookupError, ChildProcessError):
        return 130


def _run_pid(args: argparse.Namespace) -> int:
    from mmlab.trace import Capture

    pid = args.pid
    try:
        comm = open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        return _bad(f"no process {pid}")
    pfd = os.pidfd_open(pid)
    cap = Capture(pid=pid, buffer_kb=args.buffer_kb, faults=not args.no_faults, name="trace", raw=not args.text,
                  allow_unknown_lost=True)
    interrupted = 0
    gone = False
    failed: Optional[BaseException] = None
    t0 = t1 = time.monotonic()
    try:
        cap.start()
        t0 = t1 = time.monotonic()
        try:
            print(f"mmlab trace: tracing {comm} (pid {pid}) "
                  f"{'for %g s' % args.duration if args.duration else 'until it exits'}; Ctrl-C stops",
                  file=sys.stderr, flush=True)
            poll = select.poll()
            poll.register(pfd, select.POLLIN)
            end = t0 + args.duration if args.duration else None
            while True:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    break
                if poll.poll(500 if left is None else min(500, max(1, int(left * 1000)))):
                    gone = True
                    break
        except KeyboardInterrupt as e:
            interrupted = 143 if isinstance(e, _Terminated) else 130
        t1 = time.monotonic()  # the traced interval: the drain and removal in stop() are not part of it
    finally:
        try:
            tr = cap.stop()
        except Exception as e:  # noqa: BLE001 - CaptureError: reported, and the exit status says so
            tr, failed = cap.trace, e
        os.close(pfd)
    if tr is not None:
        _report(args, tr, f"{comm} (pid {pid}){' (exited)' if gone else ''}", t1 - t0)
    if failed is not None:
        _capture_failed(failed)
    return interrupted or (1 if failed is not None else 0)


def _fmt_us(us: float) -> str:
    from mmlab.report.latency_tables import fmt_us
    return fmt_us(us)


def report_lines(tr, an, what: str, elapsed: float) -> list[str]:  # type: ignore[no-untyped-def]
    """The text after the tables: the worst waits with their holders, then the stalls."""
    lines = []
    if an.worst:
        lines.append("")
        lines.append("Worst mmap_lock waits, and who held the lock meanwhile:")
    for i, w in enumerate(an.worst, 1):
        at = (w.req_ns - tr.t0_ns) / 1e6
        lines.append(f"{i:>2}. {w.name}:{w.tid} waited {_fmt_us(w.wait_us)} for "
                     f"{'write' if w.mode == 'W' else 'read'} in {w.call} at +{at:.1f} ms")
        lines.extend(_holder_lines(w, tr))
    if an.stalls:
        lines.append("")
        lines.append(f"Every wait over {an.stall_ms:g} ms ({len(an.stalls)}):")
        for w in an.stalls:
            at = (w.req_ns - tr.t0_ns) / 1e6
            main = w.holders[0] if w.holders else None
            early = _early_holds(w, tr)
            by = (f" behind {main.name}:{main.tid} ({'write' if main.mode == 'W' else 'read'}) in {main.call}"
                  if main else f" behind {early[0][0]} held since before the capture began" if early
                  else " (no holder seen)")
            lines.append(f"  +{at:9.1f} ms  {w.name}:{w.tid} {_fmt_us(w.wait_us)} for "
                         f"{'write' if w.mode == 'W' else 'read'} in {w.call}{by}")
    return lines


def _early_holds(w, tr) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    """("name:tid (mode)", release ns) of the holds taken before the capture began (their acquire
    was not seen; a --pid attach) that were released while *w* waited."""
    if tr is None or w.holders:
        return []
    end = w.req_ns + int(w.wait_us * 1e3)
    return [(f"{tr.threads.get(tid, '?')}:{tid} ({'write' if mode == 'W' else 'read'})", ts)
            for ts, tid, mode in tr.early_releases if w.req_ns <= ts <= end]


def _holder_lines(w, tr=None) -> list[str]:  # type: ignore[no-untyped-def]
    out = []
    for q in w.queued_behind:
        out.append(f"      queued behind a waiting writer: {q.name}:{q.tid} in {q.call} "
                   f"(asked {q.since_us / 1e3:.1f} ms earlier)")
    if not w.holders:
        early = _early_holds(w, tr)
        for who, ts in early[:4]:
            out.append(f"      held by {who} since before the capture began: released "
                       f"{_fmt_us((ts - w.req_ns) / 1e3)} after this wait began")
        if not early:
            out.append("      held by: nobody seen (a holder outside the traced threads, a hold taken before "
                       "the capture began, or the lock being handed over)")
    by: dict[int, list] = {}
    for h in w.holders:  # already longest overlap first
        by.setdefault(h.tid, []).append(h)
    for hs in list(by.values())[:4]:
        h = hs[0]
        held = f"held {_fmt_us(h.held_us)}" if h.held_us >= 0 else "still held at the end"
        how = " after a downgrade" if h.how == "downgrade" else ""
        more = ""
        if len(hs) > 1:
            more = (f" (+{len(hs) - 1} more holds by this thread during the wait, "
                    f"{_fmt_us(sum(x.overlap_us for x in hs))} in all)")
        out.append(f"      held by {h.name}:{h.tid} ({'write' if h.mode == 'W' else 'read'}{how}) in {h.call}: "
                   f"{held}, {_fmt_us(h.overlap_us)} of it during this wait{more}")
    if len(by) > 4:
        out.append(f"      ... and {len(by) - 4} more threads held it")
    return out


def _report(args: argparse.Namespace, tr, what: str, elapsed: float,  # type: ignore[no-untyped-def]
            exit_status: Optional[int] = None) -> None:
    from rich.table import Table

    from mmlab.report.console import console
    from mmlab.trace.analysis import analyse

    an = analyse(tr, worst=args.worst, stall_ms=args.stall_ms)
    con = console(highlight=False)  # off a terminal: tables at their width, names whole
    hidden = sum(tr.other_processes.values())
    acq = sum(1 for r in tr.locks if r.acq_ns >= 0)  # the kept mm's acquisitions (and downgrades)
    con.print(f"mmlab trace: {what}: {elapsed:.2f} s, {tr.events - hidden:,} events "
              f"({acq:,} mmap_lock acquisitions, {len(tr.calls):,} mm calls, {len(tr.faults):,} user faults), "
              f"lost {tr.lost_text()}", markup=False, soft_wrap=True)
    if tr.lost or tr.lost_unknown:
        marks = f"; the kernel marked {tr.missed:,} of them missed in what was read" if tr.missed else ""
        con.print(f"WARNING: events lost: {tr.lost_text()} (per CPU: {tr.lost_per_cpu}{marks}); waits may be "
                  f"missing or mismatched: raise --buffer-kb", markup=False, style="bold red", soft_wrap=True)
    if tr.other_processes:
        kids = ", ".join(f"{pid} ({n:,} events)" for pid, n in sorted(tr.other_processes.items())[:5])
        con.print(f"not shown: {hidden:,} more events of {len(tr.other_processes)} child process(es) of it, each "
                  f"with its own mm: {kids}; trace one with --pid, or run it directly", markup=False, soft_wrap=True)
    if tr.early_releases:
        con.print(f"{len(tr.early_releases):,} hold(s) taken before the capture began were released during it "
                  f"(their waiters name them 'since before the capture began')", markup=False, soft_wrap=True)
    t = Table(title="mmap_lock waits per thread (each acquisition: start_locking -> acquire_returned)",
              title_justify="left")
    for c in ("thread", "tid", "acquisitions", "p50", "p99", "max", "total wait", "held", "failed trylock",
              "downgrades"):
        t.add_column(c, justify="left" if c == "thread" else "right", no_wrap=c == "thread")
    for s in sorted(an.threads, key=lambda s: -s.max_us):
        t.add_row(s.name, str(s.tid), f"{s.count:,}", _fmt_us(s.p50_us), _fmt_us(s.p99_us), _fmt_us(s.max_us),
                  _fmt_us(s.total_wait_us), _fmt_us(s.held_us), str(s.failed_trylocks), str(s.downgrades))
    con.print(t)
    for line in report_lines(tr, an, what, elapsed):
        con.print(line, markup=False, soft_wrap=True)
    reports = None
    if args.stall_ms is not None:  # the model's watchdog, replayed over the trace, says the same
        from mmlab.trace.analysis import stall_reports
        reports = stall_reports(tr, args.stall_ms)
        con.print(f"\nThe model's stall watchdog (mmlab.harness.watchdog), replayed over the trace at "
                  f"{args.stall_ms:g} ms: {len(reports)} report(s)", markup=False, soft_wrap=True)
        for rep in reports:
            fin = f" (the wait lasted {rep.final_wait_ms:.1f} ms)" if rep.final_wait_ms is not None else ""
            for i, line in enumerate(rep.text().splitlines()):
                con.print(f"  {line}{fin if i == 0 else ''}", markup=False, soft_wrap=True)
    if exit_status is not None:
        con.print(f"\n{what.split(' (pid')[0]} exited with status {exit_status}", markup=False, soft_wrap=True)
    if args.json:
        d = an.as_dict()
        d.update({"target": what, "elapsed_s": round(elapsed, 3), "exit_status": exit_status,
                  "lost": None if tr.lost_unknown else tr.lost, "lost_at_least": tr.lost,
                  "lost_unknown_cpus": tr.lost_unknown, "missed_marked": tr.missed,
                  "events_kept": tr.events - hidden, "events_of_children": hidden,
                  "holds_before_capture": len(tr.early_releases),
                  "lost_per_cpu": {str(k): v for k, v in tr.lost_per_cpu.items()}, "mm": tr.mm,
                  "anomalies": tr.anomalies, "foreign_mm_events": tr.foreign,
                  "other_processes": {str(k): v for k, v in tr.other_processes.items()},
                  "clock": "CLOCK_MONOTONIC ns" + (" (us resolution: text reader)" if args.text else ""),
                  "t0_ns": tr.t0_ns, "t1_ns": tr.t1_ns})
        if reports is not None:
            d["watchdog"] = [r.as_dict() for r in reports]
        with open(args.json, "w") as f:
            json.dump(d, f, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        from mmlab.report.trace_plot import plot_trace
        plot_trace(tr, args.plot, an.worst, title=f"mmlab trace: {what}")
        print(f"wrote {args.plot}", file=sys.stderr)
    if args.perfetto:
        from mmlab.report.perfetto import write_trace
        n = write_trace(args.perfetto, tr, process=what)
        print(f"wrote {args.perfetto} ({n:,} trace events; open in ui.perfetto.dev)", file=sys.stderr)
