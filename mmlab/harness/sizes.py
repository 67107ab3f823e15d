"""Sizes as people write them: ``4096``, ``64k``, ``32M``, ``1G`` (binary units), page-aligned."""

from __future__ import annotations

import re

from mmlab.flags import PAGE_SIZE

__all__ = ["parse_size", "format_size"]

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}
_RE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object) -> int:
    """Bytes from an int or a string like "32M"; ValueError unless a positive multiple of the page size."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = _RE.match(value)
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"not a size: {value!r} (write e.g. 4096, 64k, 32M, 1G)")
        n = int(m.group(1)) * _UNITS[m.group(2).lower()]
    else:
        raise ValueError(f"not a size: {value!r}")
    if n <= 0 or n % PAGE_SIZE:
        raise ValueError(f"size {value!r} must be a positive multiple of {PAGE_SIZE}")
    return n


def format_size(n: int) -> str:
    for unit, div in (("G", 1 << 30), ("M", 1 << 20), ("k", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return str(n)
