"""The binary per-CPU buffers (``per_cpu/cpuN/trace_pipe_raw``): the same events as the text,
without the kernel formatting each one (about 1.7 us a line on the reader's CPU) and with
nanosecond timestamps.

A read returns one ring-buffer page (kernel/trace/ring_buffer.c; the layout is in tracefs's
``events/header_page`` and ``events/header_event``)::

    u64 timestamp; local_t commit (data size | RB_MISSED_EVENTS 1<<31 | RB_MISSED_STORED 1<<30);
    data: events, each a u32 header (type_len:5, time_delta:27) then
      type_len 1..28: type_len*4 bytes of data
      type_len 0:     u32 array[0] = data size + 4, then the data
      29 padding (time_delta 0: the rest of the page), 30 time extend (delta += array[0] << 27),
      31 absolute time stamp.

Each data record starts with the common fields (u16 type = the event's id, u8 flags, u8
preempt count, i32 pid = the thread) and then the event's own fields at the offsets its
``format`` file gives. :class:`RawParser` produces the same event tuples as
:class:`mmlab.trace.parse.Parser` (tgid -1: filled in from the kernel's saved tgids later), so
the record builder is the same for both.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Optional

from mmlab.trace.parse import ACQUIRED, ENTER, EXIT, FAULT, KIND_NAMES, RELEASED, START

__all__ = ["EventTable", "RawParser", "read_format"]

_U32 = struct.Struct("<I")
_PAGE = struct.Struct("<Qq")
_COMMON = struct.Struct("<Hxxi")          # common_type, common_pid
_LOCK = struct.Struct("<Hxxi Q 8x ? ?")   # type, pid, mm, (memcg_id), write, success
_FAULT = struct.Struct("<Hxxi QQQ")
_EXIT = struct.Struct("<Hxxi i 4x q")     # type, pid, nr, ret
_MISSED = (1 << 31) | (1 << 30)


def read_format(root: str, event: str) -> dict[str, tuple[int, int]]:
    """field name -> (offset, size) from ``events/<system>/<name>/format``."""
    out = {}
    with open(os.path.join(root, "events", *event.split(":"), "format")) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("field:"):
                continue
            parts = dict(p.strip().split(":", 1) for p in line.split(";") if ":" in p)
            decl = parts["field"].split()
            name = decl[-1].split("[")[0]
            out[name] = (int(parts["offset"]), int(parts["size"]))
    return out


class EventTable:
    """The ids and layouts of the enabled events: id -> (kind, syscall name, args struct)."""

    def __init__(self, root: str, events: list[str]) -> None:
        self.kinds: dict[int, tuple[int, str, Optional[struct.Struct]]] = {}
        for e in events:
            sysname, name = e.split(":")
            with open(os.path.join(root, "events", sysname, name, "id")) as f:
                eid = int(f.read())
            fmt = read_format(root, e)
            if name == "mmap_lock_start_locking":
                self._check(fmt, e, mm=(8, 8), write=(24, 1))
                self.kinds[eid] = (START, "", None)
            elif name == "mmap_lock_acquire_returned":
                self._check(fmt, e, mm=(8, 8), write=(24, 1), success=(25, 1))
                self.kinds[eid] = (ACQUIRED, "", None)
            elif name == "mmap_lock_released":
                self._check(fmt, e, mm=(8, 8), write=(24, 1))
                self.kinds[eid] = (RELEASED, "", None)
            elif name.startswith("sys_enter_"):
                args = [f for f in fmt if not f.startswith("common_") and f != "__syscall_nr"]
                if any(fmt[a] != (16 + 8 * i, 8) for i, a in enumerate(args)):
                    raise ValueError(f"{e}: unexpected argument layout {fmt}")
                self.kinds[eid] = (ENTER, name[len("sys_enter_"):], struct.Struct(f"<16x{len(args)}Q"))
            elif name.startswith("sys_exit_"):
                self._check(fmt, e, ret=(16, 8))
                self.kinds[eid] = (EXIT, name[len("sys_exit_"):], None)
            elif name == "page_fault_user":
                self._check(fmt, e, address=(8, 8), ip=(16, 8), error_code=(24, 8))
                self.kinds[eid] = (FAULT, "", None)

    @staticmethod
    def _check(fmt: dict[str, tuple[int, int]], e: str, **want: tuple[int, int]) -> None:
        for k, v in want.items():
            if fmt.get(k) != v:
                raise ValueError(f"{e}: field {k} at {fmt.get(k)}, expected {v}: a layout this reader does not know")


class RawParser:
    """Pages of one or more CPUs -> event tuples; counts by tracepoint name; pages that say
    events were missed (RB_MISSED_EVENTS) are counted in :attr:`missed_pages`, and the events
    they say were missed (the count stored after the data with RB_MISSED_STORED, else at least
    one) in :attr:`missed_per_cpu` (by the *cpu* given to :meth:`feed_page`)."""

    def __init__(self, table: EventTable) -> None:
        self.table = table
        self.events: list[tuple] = []
        self.n = [0] * 6
        self._sys: dict[str, int] = {}
        self.comms: dict[int, str] = {}
        self.bad = 0
        self.bad_examples: list[str] = []
        self.missed_pages = 0
        self.missed_events = 0
        self.missed_per_cpu: dict[int, int] = {}
        self.pages = 0
        self._mm: dict[int, str] = {}
        self._key = os.urandom(16)

    def _mm_id(self, mm: int) -> str:
        """The mm pointer, hashed (as the text's %p is) so no kernel address is written out."""
        h = self._mm[mm] = hashlib.blake2b(mm.to_bytes(8, "little"), key=self._key, digest_size=8).hexdigest()
        return h

    def feed_page(self, page: bytes, cpu: int = -1) -> None:
        """One page as read from per_cpu/cpu<cpu>/trace_pipe_raw (the hot loop)."""
        if len(page) < 16:
            return
        ts, commit = _PAGE.unpack_from(page, 0)
        size = commit & 0x3FFFFFFF
        if commit & _MISSED:  # ring_buffer_read_page(): events lost before this page
            self.missed_pages += 1
            missed = 1  # RB_MISSED_EVENTS without room to store the count: at least one
            if commit & (1 << 30) and 16 + size + 8 <= len(page):
                missed = max(1, struct.unpack_from("<Q", page, 16 + size)[0])
            self.missed_events += missed
            self.missed_per_cpu[cpu] = self.missed_per_cpu.get(cpu, 0) + missed
        self.pages += 1
        end = min(16 + size, len(page))
        off = 16
        u32 = _U32.unpack_from
        kinds = self.table.kinds
        app = self.events.append
        n = self.n
        sysc = self._sys
        mms = self._mm
        while off + 4 <= end:
            h = u32(page, off)[0]
            tl = h & 31
            delta = h >> 5
            if tl == 0:
                length = u32(page, off + 4)[0]
                data = off + 8
                nxt = off + 4 + length
            elif tl <= 28:
                data = off + 4
                nxt = data + tl * 4
            elif tl == 29:  # padding
                if delta == 0:
                    break
                off += 4 + u32(page, off + 4)[0]
                continue
            elif tl == 30:  # time extend
                ts += delta + (u32(page, off + 4)[0] << 27)
                off += 8
                continue
            else:  # 31: an absolute time stamp (upper bits from the page's)
                ab = delta | (u32(page, off + 4)[0] << 27)
                ts = (ts & ~((1 << 59) - 1)) | ab
                off += 8
                continue
            ts += delta
            off = nxt
            typ = page[data] | (page[data + 1] << 8)
            k = kinds.get(typ)
            if k is None:
                self.bad += 1
                continue
            kind = k[0]
            if kind <= RELEASED:
                _, tid, mm, write, success = _LOCK.unpack_from(page, data)
                app((ts, tid, -1, kind, mms.get(mm) or self._mm_id(mm), write, success if kind == ACQUIRED else None))
                n[kind] += 1
            elif kind == ENTER:
                tid = _COMMON.unpack_from(page, data)[1]
                app((ts, tid, -1, ENTER, k[1], k[2].unpack_from(page, data), None))  # type: ignore[union-attr]
                n[ENTER] += 1
                key = "sys_enter_" + k[1]
                sysc[key] = sysc.get(key, 0) + 1
            elif kind == EXIT:
                _, tid, _nr, ret = _EXIT.unpack_from(page, data)
                app((ts, tid, -1, EXIT, k[1], ret, None))
                n[EXIT] += 1
                key = "sys_exit_" + k[1]
                sysc[key] = sysc.get(key, 0) + 1
            else:
                _, tid, a, ip, err = _FAULT.unpack_from(page, data)
                app((ts, tid, -1, FAULT, a, ip, err))
                n[FAULT] += 1

    def all_counts(self) -> dict[str, int]:
        out = {KIND_NAMES[k]: self.n[k] for k in (START, ACQUIRED, RELEASED, FAULT) if self.n[k]}
        out.update(self._sys)
        return out

    def thread_names(self) -> dict[int, str]:
        return dict(self.comms)
