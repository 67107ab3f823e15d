"""Syscall arguments as a kernel engineer writes them: ``mmap(0, 1 GiB, RW, PRIVATE|ANONYMOUS|POPULATE)``."""

from __future__ import annotations

from mmlab.flags import Madv, Map, Mcl, Mremap

__all__ = ["size_text", "prot_text", "map_flags_text", "call_text", "ARG_NAMES"]

ARG_NAMES: dict[str, tuple[str, ...]] = {
    "mmap": ("addr", "len", "prot", "flags", "fd", "off"),
    "munmap": ("addr", "len"),
    "mprotect": ("start", "len", "prot"),
    "mremap": ("addr", "old_len", "new_len", "flags", "new_addr"),
    "brk": ("brk",),
    "mlock": ("start", "len"),
    "mlock2": ("start", "len", "flags"),
    "munlock": ("start", "len"),
    "mlockall": ("flags",),
    "munlockall": (),
    "remap_file_pages": ("start", "size", "prot", "pgoff", "flags"),
    "madvise": ("start", "len", "behavior"),
    "mincore": ("start", "len", "vec"),
    "fault": ("address", "ip", "error_code"),
}


def size_text(n: int) -> str:
    """1073741824 -> ``1 GiB``; 4096 -> ``4 KiB``; an odd size in hex."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return hex(n)


def prot_text(p: int) -> str:
    if p == 0:
        return "NONE"
    s = ("R" if p & 1 else "") + ("W" if p & 2 else "") + ("X" if p & 4 else "")
    rest = p & ~7
    return s + (f"|{rest:#x}" if rest else "")


def _bits(v: int, table: list[tuple[str, int]]) -> str:
    out = []
    for name, bit in table:
        if bit and v & bit == bit:
            out.append(name)
            v &= ~bit
    if v:
        out.append(hex(v))
    return "|".join(out) or "0"


_MAP_BITS = [(m.name.removeprefix("MAP_"), int(m)) for m in Map
             if m.name not in ("MAP_TYPE", "MAP_SHARED_VALIDATE", "MAP_SHARED", "MAP_PRIVATE")]


def map_flags_text(f: int) -> str:
    typ = f & 0x0F
    head = {1: "SHARED", 2: "PRIVATE", 3: "SHARED_VALIDATE"}.get(typ, hex(typ) if typ else "")
    rest = _bits(f & ~0x0F, _MAP_BITS) if f & ~0x0F else ""
    return "|".join(x for x in (head, rest) if x) or "0"


def _addr(a: int) -> str:
    return "0" if a == 0 else hex(a)


def _fd(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def call_text(name: str, args: tuple[int, ...]) -> str:
    a = list(args)
    try:
        if name == "mmap" and len(a) >= 6:
            parts = [_addr(a[0]), size_text(a[1]), prot_text(a[2]), map_flags_text(a[3])]
            if not a[3] & Map.MAP_ANONYMOUS:
                parts += [f"fd {_fd(a[4])}", hex(a[5]) if a[5] else "0"]
            return f"mmap({', '.join(parts)})"
        if name in ("munmap", "mlock", "munlock", "mincore") and len(a) >= 2:
            return f"{name}({_addr(a[0])}, {size_text(a[1])})"
        if name == "mlock2" and len(a) >= 3:
            return f"mlock2({_addr(a[0])}, {size_text(a[1])}, {'ONFAULT' if a[2] & 1 else a[2]})"
        if name == "mprotect" and len(a) >= 3:
            return f"mprotect({_addr(a[0])}, {size_text(a[1])}, {prot_text(a[2])})"
        if name == "mremap" and len(a) >= 4:
            fl = _bits(a[3], [(m.name.removeprefix("MREMAP_"), int(m)) for m in Mremap])
            tail = f", {_addr(a[4])}" if len(a) > 4 and a[3] & Mremap.MREMAP_FIXED else ""
            return f"mremap({_addr(a[0])}, {size_text(a[1])}, {size_text(a[2])}, {fl}{tail})"
        if name == "brk" and a:
            return f"brk({_addr(a[0])})"
        if name == "mlockall" and a:
            return f"mlockall({_bits(a[0], [(m.name, int(m)) for m in Mcl])})"
        if name == "munlockall":
            return "munlockall()"
        if name == "madvise" and len(a) >= 3:
            try:
                beh = Madv(a[2]).name
            except ValueError:
                beh = str(a[2])
            return f"madvise({_addr(a[0])}, {size_text(a[1])}, {beh})"
        if name == "remap_file_pages" and len(a) >= 5:
            return f"remap_file_pages({_addr(a[0])}, {size_text(a[1])}, {a[2]}, {a[3]}, {a[4]})"
        if name == "fault" and a:
            return f"fault({_addr(a[0])})"
    except (TypeError, ValueError):
        pass
    return f"{name}({', '.join(hex(x) for x in a)})"
