"""The trace_pipe text format, parsed one line at a time: the lean path of a capture.

A line, with ``options/record-tgid`` on (kernel/trace/trace_output.c, ``trace_print_context``)::

             python3-10946   (  10905) [000] .....   247.230715: mmap_lock_start_locking: mm=00000000c7cbbc6a memcg_id=3395 write=true
    ^comm %16s      ^-pid %-7d  ^tgid %7s ^cpu   ^flags    ^secs.usecs

The context columns have fixed widths (comm is at most 15 characters, a pid at most 7 digits), so
the fast path slices at known offsets and dispatches on one character of the event name; a line
that does not fit the layout (a longer CPU number, another option set) goes through a regular
expression instead. The text timestamp has microsecond resolution: ns values are multiples of 1000.

An event is a tuple ``(ts_ns, tid, tgid, kind, a, b, c)``:

=========  ==========================  ===============  =================
kind       a                           b                c
=========  ==========================  ===============  =================
START      mm (hashed pointer, str)    write (bool)     None
ACQUIRED   mm                          write            success (bool)
RELEASED   mm                          write            None
ENTER      syscall name ("mmap")       args (ints)      None
EXIT       syscall name                return value     None
FAULT      address                     ip               error_code
=========  ==========================  ===============  =================
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

__all__ = ["START", "ACQUIRED", "RELEASED", "ENTER", "EXIT", "FAULT", "Parser", "parse_lines", "KIND_NAMES"]

START, ACQUIRED, RELEASED, ENTER, EXIT, FAULT = range(6)
KIND_NAMES = {START: "mmap_lock_start_locking", ACQUIRED: "mmap_lock_acquire_returned",
              RELEASED: "mmap_lock_released", FAULT: "page_fault_user"}

_SLOW = re.compile(r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*(?P<tgid>[\d-]+)\)\s+)?\[(?P<cpu>\d+)\]\s+"
                   r"(?:\S{4,5}\s+)?(?P<ts>\d+\.\d+):\s(?P<rest>.*)$")
# print_trace_line() (kernel/trace/trace.c) before the first event read after a loss:
# "CPU:%d [LOST %lu EVENTS]", or "CPU:%d [LOST EVENTS]" when the count is not known.
_LOST = re.compile(r"^CPU:(?P<cpu>\d+) \[LOST (?:(?P<n>\d+) )?EVENTS\]")
_U64 = 1 << 64
_S64 = 1 << 63


def _args(s: str) -> tuple[int, ...]:
    """``addr: 0, len: 0x801000, prot: 0x3`` -> (0, 0x801000, 3): the kernel prints each
    argument ``%#lx`` (print_syscall_enter)."""
    out = []
    for part in s.split(", "):
        v = part[part.find(": ") + 2:]
        try:
            out.append(int(v, 16))
        except ValueError:
            out.append(-1)
    return tuple(out)


class Parser:
    """Parses lines into :attr:`events`; keeps per-tracepoint :attr:`counts`, the latest thread
    name per tid (:attr:`comms`), the lines it could not read (:attr:`bad`) and the events the
    kernel said were lost (``CPU:n [LOST m EVENTS]``, in :attr:`missed_per_cpu`; "at least one"
    where the kernel did not give the count)."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.counts: dict[str, int] = {}
        self.comms: dict[int, str] = {}
        self.bad = 0
        self.bad_examples: list[str] = []
        self.n = [0] * 6
        self._sys: dict[str, int] = {}  # "sys_enter_mmap" -> count (folded into counts on read)
        self.missed_per_cpu: dict[int, int] = {}

    def feed(self, lines: Iterable[str]) -> None:
        """The hot loop: fixed offsets, one character to dispatch on, one tuple per event."""
        app = self.events.append
        comms = self.comms
        n = self.n
        sysc = self._sys
        slow = self._slow
        last = -1
        for line in lines:
            if line[16:17] != "-" or line[39:41] != "] ":
                if line and line[0] != "#" and line.strip():
                    slow(line)
                continue
            if line[59:61] == ": ":  # seconds below 100,000: the timestamp has fixed columns too
                j = 59
                ts = (int(line[47:52]) * 1_000_000 + int(line[53:59])) * 1000
            else:
                j = line.find(": ", 47)
                if j < 0:
                    slow(line)
                    continue
                ts = int(line[47:j].replace(".", "")) * 1000
            tid = int(line[17:24])
            if tid != last:
                comms[tid] = line[:16]
                last = tid
            try:
                tgid = int(line[26:33])
            except ValueError:
                tgid = -1
            c = line[j + 2]
            if c == "m":  # mmap_lock_*
                k = line[j + 12]
                if k == "s":
                    app((ts, tid, tgid, 0, line[j + 30:j + 46], line.find("write=t", j) > 0, None))
                    n[0] += 1
                elif k == "a":
                    w = line.find("write=", j + 50)
                    write = line[w + 6] == "t"
                    app((ts, tid, tgid, 1, line[j + 33:j + 49], write, line[w + 19 if write else w + 20] == "t"))
                    n[1] += 1
                else:
                    app((ts, tid, tgid, 2, line[j + 25:j + 41], line.find("write=t", j) > 0, None))
                    n[2] += 1
            elif c == "s":  # sys_NAME(args) / sys_NAME -> ret
                p = line.find("(", j + 2)
                q = line.find(" -> ", j + 2)
                if q >= 0 and (p < 0 or q < p):
                    name = line[j + 6:q]
                    r = int(line[q + 4:].strip(), 16)
                    app((ts, tid, tgid, 4, name, r - _U64 if r >= _S64 else r, None))
                    n[4] += 1
                    key = "sys_exit_" + name
                else:
                    name = line[j + 6:p]
                    app((ts, tid, tgid, 3, name, _args(line[p + 1:line.rfind(")")]), None))
                    n[3] += 1
                    key = "sys_enter_" + name
                sysc[key] = sysc.get(key, 0) + 1
            elif c == "p":  # page_fault_user: address=0x... ip=0x... error_code=0x...
                f = line[j + 19:].split()
                vals = []
                for x in f[:3]:
                    v = x[x.find("=") + 1:]
                    try:
                        vals.append(int(v, 16))
                    except ValueError:
                        vals.append(-1)
                while len(vals) < 3:
                    vals.append(-1)
                app((ts, tid, tgid, 5, vals[0], vals[1], vals[2]))
                n[5] += 1
            else:
                self._bad(line)

    def _bad(self, line: str) -> None:
        self.bad += 1
        if len(self.bad_examples) < 5:
            self.bad_examples.append(line.rstrip("\n"))

    def _slow(self, line: str) -> None:
        """A line outside the fixed layout: the same fields, found by a regular expression."""
        lost = _LOST.match(line)
        if lost:
            c = int(lost.group("cpu"))
            self.missed_per_cpu[c] = self.missed_per_cpu.get(c, 0) + max(1, int(lost.group("n") or 1))
            return
        m = _SLOW.match(line.rstrip("\n"))
        if not m:
            self._bad(line)
            return
        comm = m.group("comm")
        pad = comm.rjust(16)[:16] if len(comm) <= 16 else comm[:16]
        tgid = m.group("tgid")
        fixed = (f"{pad}-{int(m.group('pid')):<7d} ({(tgid or '-------'):>7s}) [000] ..... "
                 f"{m.group('ts'):>12s}: {m.group('rest')}\n")
        if fixed[16:17] == "-" and fixed[39:41] == "] " and fixed.find(": ", 47) >= 0:
            before = len(self.events)
            self.feed((fixed,))
            if len(self.events) > before:
                self.comms[int(m.group("pid"))] = comm
            return
        self._bad(line)

    def all_counts(self) -> dict[str, int]:
        """Events by tracepoint name: ``mmap_lock_start_locking``, ``sys_enter_mmap``, ..."""
        out = {KIND_NAMES[k]: self.n[k] for k in (START, ACQUIRED, RELEASED, FAULT) if self.n[k]}
        out.update(self._sys)
        return out

    def thread_names(self) -> dict[int, str]:
        return {t: c.strip() for t, c in self.comms.items()}


def parse_lines(lines: Iterable[str], parser: Optional[Parser] = None) -> Parser:
    p = parser or Parser()
    p.feed(lines)
    return p
