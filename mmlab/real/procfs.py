"""Readers of what the real kernel shows about this process: /proc/self/maps, /proc/self/smaps
(Size, Rss, Locked, VmFlags), /proc/self/pagemap (pte present bits), VmLck of
/proc/self/status, and MemAvailable of /proc/meminfo.

The shapes match the model's views (``MM.maps()``, ``MM.smaps()``, ``MM.vm_lck_kb()``) so the
two can be compared field by field. Readers take an address window and return only the vmas
that intersect it, because the rest of the process (the interpreter, its libraries, its heap)
is nobody's business here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

__all__ = ["MapsEntry", "read_maps", "read_smaps", "read_vm_lck_kb", "read_mem_available",
           "read_pagemap_present"]


@dataclass(frozen=True)
class MapsEntry:
    """One line of /proc/self/maps (and, from smaps, its Rss, Locked and VmFlags)."""

    start: int
    end: int
    perms: str  # "rw-p"
    offset: int
    name: str
    rss_kb: int = -1
    locked_kb: int = -1
    vmflags: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return self.end - self.start


def _parse_head(line: str) -> Optional[MapsEntry]:
    parts = line.split(None, 5)
    if len(parts) < 5 or "-" not in parts[0]:
        return None
    s, e = parts[0].split("-")
    return MapsEntry(int(s, 16), int(e, 16), parts[1], int(parts[2], 16),
                     parts[5].strip() if len(parts) > 5 else "")


def read_maps(lo: int = 0, hi: int = 1 << 64) -> list[MapsEntry]:
    """/proc/self/maps lines of the vmas intersecting [lo, hi), in address order."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            m = _parse_head(line)
            if m is not None and m.end > lo and m.start < hi:
                out.append(m)
    return out


def read_smaps(lo: int = 0, hi: int = 1 << 64) -> list[MapsEntry]:
    """/proc/self/smaps for the vmas intersecting [lo, hi): maps fields plus Rss, Locked, VmFlags."""
    out: list[MapsEntry] = []
    cur: Optional[MapsEntry] = None
    rss = locked = -1
    flags: tuple[str, ...] = ()
    with open("/proc/self/smaps") as f:
        text = f.read()
    for line in text.splitlines():
        if not line:
            continue
        c = line[0]
        if c.isdigit() or "a" <= c <= "f":
            head = _parse_head(line)
            if head is not None and ":" not in line.split(None, 1)[0]:
                if cur is not None:
                    out.append(_with(cur, rss, locked, flags))
                cur = head if head.end > lo and head.start < hi else None
                rss = locked = -1
                flags = ()
                continue
        if cur is None:
            continue
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Locked:"):
            locked = int(line.split()[1])
        elif line.startswith("VmFlags:"):
            flags = tuple(line.split()[1:])
    if cur is not None:
        out.append(_with(cur, rss, locked, flags))
    return out


def _with(m: MapsEntry, rss: int, locked: int, flags: tuple[str, ...]) -> MapsEntry:
    return MapsEntry(m.start, m.end, m.perms, m.offset, m.name, rss, locked, flags)


def read_vm_lck_kb() -> int:
    """VmLck of /proc/self/status: the process's locked_vm in kB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmLck:"):
                return int(line.split()[1])
    return 0


def read_mem_available() -> int:
    """MemAvailable of /proc/meminfo, in bytes (MemFree where the kernel is too old to say)."""
    free = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) << 10
            if line.startswith("MemFree:"):
                free = int(line.split()[1]) << 10
    return free


PM_GUARD_REGION = 1 << 58  # 6.15: the pte is a guard marker (MADV_GUARD_INSTALL)


def read_pagemap_guard(addr: int) -> bool:
    """Is the page at *addr* a guard region (bit 58 of /proc/self/pagemap, 6.15+)? An access
    there raises SIGSEGV."""
    with open("/proc/self/pagemap", "rb") as f:
        f.seek((addr >> 12) * 8)
        (v,) = struct.unpack("<Q", f.read(8))
    return bool(v & PM_GUARD_REGION)


def read_pagemap_present(start: int, end: int) -> bytes:
    """One byte per page of [start, end): 1 if the pte is present (bit 63 of /proc/self/pagemap),
    which -- unlike mincore() on a shared mapping -- is the page table itself, like the model's."""
    n = (end - start) >> 12
    with open("/proc/self/pagemap", "rb") as f:
        f.seek((start >> 12) * 8)
        raw = f.read(8 * n)
    return bytes((v >> 63) & 1 for v in struct.unpack(f"<{n}Q", raw))
