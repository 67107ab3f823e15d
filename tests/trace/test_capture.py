"""Captures of this process on the real kernel (skipped with the reason where tracing is unavailable)."""

from __future__ import annotations

import os

import pytest

from mmlab.flags import MAP_ANONYMOUS, MAP_POPULATE, MAP_PRIVATE, PROT_READ, PROT_WRITE
from mmlab.trace import Capture, instances_of_mine

MiB = 1 << 20
RW = PROT_READ | PROT_WRITE


def test_populate_and_downgrade(tracing: None, libc) -> None:  # type: ignore[no-untyped-def]
    """A MAP_POPULATE is a short write hold then a read hold for the populate; its munmap is a
    write hold downgraded to read (acquire_returned write=false with no start_locking)."""
    with Capture(buffer_kb=512, name="test") as cap:
        a = libc.mmap(0, 4 * MiB, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE)
        libc.munmap(a, 4 * MiB)
    tr = cap.trace
    assert tr is not None and tr.lost == 0
    me = os.getpid()
    mm = [c for c in tr.calls if c.name == "mmap" and c.ret == a and c.tid == me]
    um = [c for c in tr.calls if c.name == "munmap" and c.args[:2] == (a, 4 * MiB)]
    assert len(mm) == 1 and len(um) == 1, tr.calls
    assert [(r.mode, r.how) for r in tr.locks_in(mm[0])][:2] == [("W", ""), ("R", "")]
    ul = tr.locks_in(um[0])
    assert [(r.mode, r.how) for r in ul] == [("W", ""), ("R", "downgrade")]
    assert ul[0].rel_ns == ul[1].acq_ns
    assert tr.counts["mmap_lock_acquire_returned"] > tr.counts["mmap_lock_start_locking"]  # the downgrade


def test_instance_removed_after_exception(tracing: None, libc) -> None:  # type: ignore[no-untyped-def]
    cap = Capture(buffer_kb=64, name="boom")
    with pytest.raises(ZeroDivisionError):
        with cap:
            assert cap.instance is not None and os.path.isdir(cap.instance.path)
            path = cap.instance.path
            1 / 0
    assert not os.path.exists(path)
    assert cap.instance is None and cap.trace is not None
    assert not [n for n in instances_of_mine() if n.startswith(f"mmlab-boom-{os.getpid()}-")]
