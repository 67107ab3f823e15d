"""Capture: one private tracing instance around a piece of a process's life.

::

    with Capture(pid=os.getpid(), buffer_kb=4096, name="conform") as cap:
        ...                    # the calls to look at
    tr = cap.trace             # a Trace; the instance is gone, whatever happened inside

Setup (in this order, so that nothing is missed and nothing foreign gets in): mkdir the instance,
``tracing_on`` 0, ``trace_clock`` mono (CLOCK_MONOTONIC, the clock of time.monotonic_ns()),
``buffer_size_kb``, ``options/record-tgid`` and ``options/event-fork`` (threads and children the
traced threads create are added to the pid filter by the kernel), ``set_event_pid`` with every
thread of the process, the reader thread on ``trace_pipe``, the events, then ``tracing_on`` 1.

A reader thread drains the buffers while the program runs, so the per-CPU buffers need only hold
what arrives between two reads. By default it reads the binary pages of
``per_cpu/cpuN/trace_pipe_raw`` (:mod:`mmlab.trace.raw`: nanosecond timestamps, and no text for
the kernel to format); ``raw=False`` reads the ``trace_pipe`` text (:mod:`mmlab.trace.parse`). When the traced process is another process it parses as it
reads; when it is this process (``pid=os.getpid()``), it only collects the text and parses after
the capture, so that the capture does not take the GIL from the very threads it watches (and its
own thread is left out of the pid filter). Lost events are always in :attr:`Trace.lost`, per CPU
the larger of what ``per_cpu/cpuN/stats`` says (``overrun`` + ``dropped events``) and what the
kernel marked missed in what was read (RB_MISSED_EVENTS in a raw page's header, ``CPU:n [LOST m
EVENTS]`` in the text): the marks count overwritten events that ``overrun`` counts too, so the two
are not added. A CPU whose stats cannot be read leaves the loss unknown
(:attr:`Trace.lost_unknown`); :meth:`Capture.stop` then raises :class:`CaptureError` unless
``allow_unknown_lost`` (a command that only reports says "unknown"; one that judges must not judge).

:meth:`Capture.stop` also raises :class:`CaptureError` when the reader thread did not stop (no
trace is built then: its events would be incomplete), when the reader failed, and when the
instance could not be removed (the trace is in :attr:`Capture.trace` except in the first case).

The instance is removed on every exit path: the with-block's exceptions and KeyboardInterrupt
(:meth:`stop` runs in ``__exit__``), and :func:`atexit` for a process that exits while a capture
is open.
"""

from __future__ import annotations

import atexit
import errno
import os
import select
import sys
import threading
import time
import weakref
from typing import Iterable, Optional

from mmlab.trace.parse import Parser
from mmlab.trace.raw import EventTable, RawParser
from mmlab.trace.records import Trace, build_trace
from mmlab.trace.tracefs import FAULT_EVENT, LOCK_EVENTS, MM_SYSCALLS, Instance, unavailable_reason

__all__ = ["Capture", "CaptureError", "TraceUnavailable", "process_tids", "combine_lost"]

_open: "weakref.WeakSet[Capture]" = weakref.WeakSet()


@atexit.register
def _remove_all() -> None:
    for c in list(_open):
        try:
            c.stop()
        except Exception as e:  # noqa: BLE001 - best effort at exit, and said
            if c.instance is not None:
                c.instance.remove()
            print(f"mmlab: tracing capture {c.name} at exit: {e}", file=sys.stderr)


class TraceUnavailable(RuntimeError):
    """Tracing cannot run here; the message is unavailable_reason()."""


class CaptureError(RuntimeError):
    """The capture's result cannot be trusted as it is (lost events unknown, the reader failed or
    did not stop), or its instance could not be removed. :attr:`Capture.trace` holds the trace
    where one could be built."""


def process_tids(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return []


def combine_lost(stats: dict[int, Optional[int]], missed: dict[int, int]) -> tuple[dict[int, int], list[int]]:
    """Events lost per CPU, and the CPUs whose loss is unknown. *stats*: what per_cpu/cpuN/stats
    says (None: unreadable); *missed*: what the kernel marked missed in what was read. The marks
    (rb_get_reader_page: the overrun since the last read) are events ``overrun`` counts too, so
    per CPU it is the larger of the two, not their sum; for an unknown CPU, a lower bound."""
    lost: dict[int, int] = {}
    unknown = []
    for c in sorted(set(stats) | set(missed)):
        n = stats.get(c)
        if c in stats and n is None:
            unknown.append(c)
        lost[c] = max(n or 0, missed.get(c, 0))
    return lost, unknown


def _events(syscalls: bool, faults: bool, extra: Iterable[str]) -> list[str]:
    ev = list(LOCK_EVENTS)
    if syscalls:
        for s in MM_SYSCALLS:
            ev += [f"syscalls:sys_enter_{s}", f"syscalls:sys_exit_{s}"]
    if faults:
        ev.append(FAULT_EVENT)
    ev += list(extra)
    return ev


class Capture:
    """Trace mm->mmap_lock and the mm syscalls of one process (all its threads).

    pid: the process (tgid); None: this process. ``tids``: trace only these threads of it
    (new threads they create still follow). ``buffer_kb``: per-CPU ring buffer size.
    ``parse_live``: parse while reading (default: yes for another process, no for this one).
    ``allow_unknown_lost``: do not raise when a CPU's lost-event count cannot be read (the trace
    says so in :attr:`Trace.lost_unknown`).
    """

    start_timeout_s = 5.0   # the reader thread must be running within this
    join_timeout_s = 30.0   # and must have drained and stopped within this after stop()

    def __init__(self, pid: Optional[int] = None, buffer_kb: int = 4096, syscalls: bool = True,
                 faults: bool = True, name: str = "capture", tids: Optional[Iterable[int]] = None,
                 parse_live: Optional[bool] = None, extra_events: Iterable[str] = (),
                 keep_text: bool = False, raw: bool = True, allow_unknown_lost: bool = False) -> None:
        if buffer_kb < 4:
            raise ValueError("buffer_kb must be at least 4")
        self.pid = os.getpid() if pid is None else int(pid)
        self.own = self.pid == os.getpid()
        self.buffer_kb = int(buffer_kb)
        self.syscalls = syscalls
        self.faults = faults
        self.name = name
        self.tids = list(tids) if tids is not None else None
        self.parse_live = (not self.own) if parse_live is None else parse_live
        self.extra_events = list(extra_events)
        self.keep_text = keep_text
        self.text: list[bytes] = []  # what was read (text, or binary pages with raw), with keep_text
        self.raw = raw
        self.allow_unknown_lost = allow_unknown_lost
        self.instance: Optional[Instance] = None
        self.enabled: list[str] = []
        self.trace: Optional[Trace] = None
        self.parser: "Parser | RawParser" = Parser()
        self._chunks: list = []  # text: bytes; raw: (cpu, page)
        self._tail = b""
        self._fd = -1
        self._raw_fds: dict[int, int] = {}
        self._page = 4096
        self._tgid_of: dict[int, int] = {}
        self._names: dict[int, str] = {}
        self._names_at = 0.0
        self._reader: Optional[threading.Thread] = None
        self._reader_tid = 0
        self._stop = threading.Event()
        self._started = threading.Event()
        self._error: Optional[BaseException] = None
        self.t_start_ns = -1
        self.t_stop_ns = -1
        self.bytes_read = 0
        self.reader_cpu_ns = 0  # the reader thread's CPU time (reading, and parsing when live)

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "Capture":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "Capture":
        why = unavailable_reason()
        if why:
            raise TraceUnavailable(why)
        if not os.path.isdir(f"/proc/{self.pid}"):
            raise ProcessLookupError(errno.ESRCH, f"no process {self.pid}")
        inst = self.instance = Instance(self.name)
        _open.add(self)
        try:
            inst.create()
            inst.write("tracing_on", "0")
            inst.write("trace_clock", "mono")
            inst.write("buffer_size_kb", str(self.buffer_kb))
            inst.write("options/record-tgid", "1")
            inst.write("options/event-fork", "1")
            want = [e for e in _events(self.syscalls, self.faults, self.extra_events) if inst.has_event(e)]
            if self.raw:
                self.parser = RawParser(EventTable(inst.root, want))
                try:
                    self._page = int(inst.read("buffer_subbuf_size_kb").strip()) * 1024
                except (OSError, ValueError):
                    self._page = 4096
                for c in inst.cpus():
                    self._raw_fds[c] = os.open(inst.file(f"per_cpu/cpu{c}/trace_pipe_raw"), os.O_RDONLY | os.O_NONBLOCK)
            else:
                self._fd = os.open(inst.file("trace_pipe"), os.O_RDONLY | os.O_NONBLOCK)
            self._reader = threading.Thread(target=self._read_main, name="mmlab-trace-reader", daemon=True)
            self._reader.start()
            if not self._started.wait(self.start_timeout_s):
                raise RuntimeError(f"the trace reader thread did not start within {self.start_timeout_s:g} s")
            self._set_pids()
            self._refresh_names()
            self.enabled = inst.enable_events(want)
            self.t_start_ns = time.monotonic_ns()
            inst.write("tracing_on", "1")
            if self.tids is None:
                self._set_pids(append=True)  # threads born while the filter was being written
        except BaseException as e:
            try:
                self.stop()
            except CaptureError as e2:  # the instance left behind, say: worth knowing, after the cause
                e.add_note(f"and stopping the capture: {e2}")
            raise
        return self

    def _set_pids(self, append: bool = False) -> None:
        assert self.instance is not None
        want = self.tids if self.tids is not None else process_tids(self.pid)
        want = [t for t in want if t != self._reader_tid]
        if not want:
            raise ProcessLookupError(errno.ESRCH, f"process {self.pid} has no threads to trace")
        if append:
            have = set(self.instance.read("set_event_pid").split())
            new = [t for t in want if str(t) not in have]
            if new:
                self.instance.write("set_event_pid", " ".join(map(str, new)), append=True)
        else:
            self.instance.set_pids(want)

    def stop(self) -> Optional[Trace]:
        """Tracing off, drain the buffers, count the lost events, remove the instance, build the
        trace. Idempotent; the instance is removed even when something here fails. Raises
        :class:`CaptureError` (see the module's docstring) after doing all that."""
        inst = self.instance
        if inst is None:
            return self.trace
        lost_stats: dict[int, Optional[int]] = {}
        stuck = False
        try:
            if inst.created:
                try:
                    inst.write("tracing_on", "0")
                except OSError:
                    pass
            self.t_stop_ns = time.monotonic_ns()
            self._stop.set()
            if self._reader is not None and self._reader.ident is not None:
                self._reader.join(self.join_timeout_s)
                stuck = self._reader.is_alive()
            lost_stats = inst.overruns() if inst.created else {}
            if self.raw and inst.created and not stuck:
                self._refresh_names(force=True)
                self._saved_maps(inst.root)
        finally:
            for fd in [self._fd, *self._raw_fds.values()]:
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self._fd = -1
            self._raw_fds = {}
            inst.remove()
            self.instance = None
            _open.discard(self)
        problems = []
        if inst.created:
            problems.append(f"the tracing instance {inst.name} could not be removed: {inst.remove_error}")
        if stuck:
            raise CaptureError("; ".join([f"the trace reader did not stop within {self.join_timeout_s:g} s: "
                                          "no trace (what it read is incomplete)", *problems]))
        if self._tail:
            self._feed(self._tail + b"\n", final=True)
            self._tail = b""
        p = self.parser
        if self._chunks:
            if isinstance(p, RawParser):
                for cpu, page in self._chunks:
                    p.feed_page(page, cpu)
            else:
                p.feed(b"".join(self._chunks).decode("utf-8", "replace").splitlines(True))
            self._chunks = []
        if isinstance(p, RawParser):
            names = dict(self._names)
            names.update({t: n for t, n in p.comms.items() if t not in names})
            tr = build_trace(p.events, names, self.pid, p.all_counts(), self._tgid_of)
            tr.anomalies.update({"pages with missed events": p.missed_pages} if p.missed_pages else {})
        else:
            tr = build_trace(p.events, p.thread_names(), self.pid, p.all_counts())
        missed = dict(p.missed_per_cpu)
        lost, unknown = combine_lost(lost_stats, missed)
        tr.lost_per_cpu = lost
        tr.lost = sum(lost.values())
        tr.lost_unknown = unknown
        tr.missed = sum(missed.values())
        tr.bad_lines = p.bad
        tr.instance = inst.name
        if self.t_start_ns >= 0:
            tr.t0_ns = self.t_start_ns if tr.t0_ns < 0 else min(tr.t0_ns, self.t_start_ns)
            tr.t1_ns = max(tr.t1_ns, self.t_stop_ns)
        self.trace = tr
        if self._error is not None:
            problems.insert(0, f"trace reader failed: {self._error!r}")
        if unknown and not self.allow_unknown_lost:
            problems.append(f"events lost: unknown (the stats of CPU {', '.join(map(str, unknown))} could not "
                            f"be read; at least {tr.lost:,})")
        if problems:
            raise CaptureError("; ".join(problems))
        return tr

    # ------------------------------------------------------------------ the reader
    def _feed(self, data: bytes, final: bool = False) -> None:
        self.bytes_read += len(data)
        if self.keep_text and not final:
            self.text.append(data)
        if not self.parse_live:
            self._chunks.append(data)
            return
        data = self._tail + data
        cut = data.rfind(b"\n") + 1
        self._tail = data[cut:]
        if cut:
            self.parser.feed(data[:cut].decode("utf-8", "replace").splitlines(True))

    def _refresh_names(self, force: bool = False) -> None:
        """Thread names and processes for the binary reader (the text carries them): the traced
        process's threads from /proc, at most every 0.2 s (and once more at the end)."""
        now = time.monotonic()
        if not self.raw or (not force and now - self._names_at < 0.2):
            return
        self._names_at = now
        base = f"/proc/{self.pid}/task"
        try:
            tids = os.listdir(base)
        except OSError:
            return
        for t in tids:
            tid = int(t)
            self._tgid_of[tid] = self.pid
            try:
                with open(f"{base}/{t}/comm") as f:
                    self._names[tid] = f.read().strip()
            except OSError:
                pass

    def _saved_maps(self, root: str) -> None:
        """The kernel's own tid -> tgid and tid -> comm maps (saved_tgids, saved_cmdlines), for
        threads and child processes that came and went between two looks at /proc. The comm the
        kernel saved while tracing wins over an earlier look at /proc (a program that exec'd or
        renamed a thread since)."""
        for fname, into, conv, override in (("saved_tgids", self._tgid_of, int, False),
                                            ("saved_cmdlines", self._names, str, True)):
            try:
                with open(os.path.join(root, fname)) as f:
                    for line in f:
                        k, _, v = line.strip().partition(" ")
                        if k.isdigit() and v and (override or int(k) not in into):
                            into[int(k)] = conv(v)  # type: ignore[index]
            except (OSError, ValueError):
                pass

    def _read_raw(self) -> None:
        """The binary reader: every CPU's pages, until the buffers are empty."""
        fds = list(self._raw_fds.items())
        poll = select.poll()
        for _, fd in fds:
            poll.register(fd, select.POLLIN)
        size = self._page
        p = self.parser
        live = self.parse_live
        keep = self.keep_text
        chunks = self._chunks
        while True:
            stopping = self._stop.is_set()
            got = 0
            for cpu, fd in fds:
                while True:
                    try:
                        data = os.read(fd, size)
                    except BlockingIOError:
                        break
                    if not data:
                        break
                    got += len(data)
                    if keep:
                        self.text.append(data)
                    if live:
                        p.feed_page(data, cpu)  # type: ignore[union-attr]
                    else:
                        chunks.append((cpu, data))
            self.bytes_read += got
            self._refresh_names()
            if stopping:
                break  # tracing was off before the stop was set: empty means drained
            if not got:
                poll.poll(20)  # woken early at buffer_percent full

    def _read_main(self) -> None:
        self._reader_tid = threading.get_native_id()
        self._started.set()
        if self.raw:
            try:
                self._read_raw()
            except BaseException as e:  # noqa: BLE001 - reported by stop()
                self._error = e
            finally:
                self.reader_cpu_ns = time.thread_time_ns()
            return
        fd = self._fd
        poll = select.poll()
        poll.register(fd, select.POLLIN)
        try:
            while True:
                stopping = self._stop.is_set()
                try:
                    data = os.read(fd, 1 << 20)
                except BlockingIOError:
                    data = b""
                if data:
                    self._feed(data)
                    continue
                if stopping:
                    break  # tracing was off before the stop was set: empty means drained
                poll.poll(50)
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            self._error = e
        finally:
            self.reader_cpu_ns = time.thread_time_ns()
