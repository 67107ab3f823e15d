"""The trace_pipe text parser and the record builder, on text the kernel printed (no tracing needed)."""

from __future__ import annotations

from mmlab.trace import records_from_lines
from mmlab.trace.parse import ACQUIRED, ENTER, EXIT, FAULT, Parser

# Captured on Linux 6.18 (record-tgid on): a 16 MiB anonymous MAP_POPULATE, then its munmap, on
# thread 10946 of process 10905, and a user fault on the main thread.
TEXT = """\
         python3-10905   (  10905) [000] d....   247.230608: page_fault_user: address=0x7fdead6d3000 ip=0x7fdeadfaf8bb error_code=0x6
         python3-10905   (  10905) [000] .....   247.230609: mmap_lock_start_locking: mm=00000000c7cbbc6a memcg_id=3395 write=false
         python3-10905   (  10905) [000] .....   247.230610: mmap_lock_acquire_returned: mm=00000000c7cbbc6a memcg_id=3395 write=false success=true
         python3-10905   (  10905) [000] .....   247.230612: mmap_lock_released: mm=00000000c7cbbc6a memcg_id=3395 write=false
          popper-10946   (  10905) [001] .....   247.230714: sys_mmap(addr: 0, len: 0x1000000, prot: 0x3, flags: 0x8022, fd: 0xffffffff, off: 0)
          popper-10946   (  10905) [001] .....   247.230715: mmap_lock_start_locking: mm=00000000c7cbbc6a memcg_id=3395 write=true
          popper-10946   (  10905) [001] .....   247.230716: mmap_lock_acquire_returned: mm=00000000c7cbbc6a memcg_id=3395 write=true success=true
          popper-10946   (  10905) [001] .....   247.230736: mmap_lock_released: mm=00000000c7cbbc6a memcg_id=3395 write=true
          popper-10946   (  10905) [001] .....   247.230738: mmap_lock_start_locking: mm=00000000c7cbbc6a memcg_id=3395 write=false
          popper-10946   (  10905) [001] .....   247.230739: mmap_lock_acquire_returned: mm=00000000c7cbbc6a memcg_id=3395 write=false success=true
          popper-10946   (  10905) [001] .....   247.240739: mmap_lock_released: mm=00000000c7cbbc6a memcg_id=3395 write=false
          popper-10946   (  10905) [001] .....   247.240740: sys_mmap -> 0x7fdea4e00000
          popper-10946   (  10905) [001] .....   247.240800: sys_munmap(addr: 0x7fdea4e00000, len: 0x1000000)
          popper-10946   (  10905) [001] .....   247.240801: mmap_lock_start_locking: mm=00000000c7cbbc6a memcg_id=3395 write=true
          popper-10946   (  10905) [001] .....   247.240802: mmap_lock_acquire_returned: mm=00000000c7cbbc6a memcg_id=3395 write=true success=true
          popper-10946   (  10905) [001] .....   247.240805: mmap_lock_acquire_returned: mm=00000000c7cbbc6a memcg_id=3395 write=false success=true
          popper-10946   (  10905) [001] .....   247.242805: mmap_lock_released: mm=00000000c7cbbc6a memcg_id=3395 write=false
          popper-10946   (  10905) [001] .....   247.242806: sys_munmap -> 0x0
          popper-10946   (  10905) [001] .....   247.242900: sys_munmap(addr: 0x1000, len: 0x1000)
          popper-10946   (  10905) [001] .....   247.242901: mmap_lock_start_locking: mm=00000000c7cbbc6a memcg_id=3395 write=true
          popper-10946   (  10905) [001] .....   247.242902: mmap_lock_acquire_returned: mm=00000000c7cbbc6a memcg_id=3395 write=true success=false
          popper-10946   (  10905) [001] .....   247.242903: sys_munmap -> 0xfffffffffffffffc
             cat-11000   (  11000) [001] .....   247.242904: mmap_lock_start_locking: mm=00000000deadbeef memcg_id=3395 write=true
"""


def test_parser_fields() -> None:
    p = Parser()
    p.feed(TEXT.splitlines(True))
    assert p.bad == 0
    ev = p.events
    assert ev[0][:4] == (247230608000, 10905, 10905, FAULT) and ev[0][4] == 0x7fdead6d3000
    assert ev[4][3] == ENTER and ev[4][4] == "mmap" and ev[4][5] == (0, 16 << 20, 3, 0x8022, 0xFFFFFFFF, 0)
    assert ev[6][3] == ACQUIRED and ev[6][4] == "00000000c7cbbc6a" and ev[6][5] is True and ev[6][6] is True
    assert ev[11][3] == EXIT and ev[11][5] == 0x7FDEA4E00000
    assert ev[20][3] == ACQUIRED and ev[20][6] is False
    assert ev[21][5] == -4
    assert p.thread_names()[10946] == "popper"
    c = p.all_counts()
    assert c["mmap_lock_start_locking"] == 6 and c["mmap_lock_acquire_returned"] == 6
    assert c["mmap_lock_released"] == 4 and c["sys_enter_munmap"] == 2 and c["page_fault_user"] == 1


def test_parser_slow_path_reads_other_layouts() -> None:
    """A line outside the fixed layout (a 4-digit CPU number, no tgid column) is still read."""
    p = Parser()
    p.feed(["  a-b c-77 [1023] .....  12.000001: mmap_lock_released: mm=00000000c7cbbc6a memcg_id=1 write=true\n",
            "garbage\n"])
    assert len(p.events) == 1 and p.events[0][:4] == (12000001000, 77, -1, 2)
    assert p.thread_names()[77] == "a-b c" and p.bad == 1


def test_records_from_text() -> None:
    tr = records_from_lines(TEXT.splitlines(True), tgid=10905)
    assert tr.mm == "00000000c7cbbc6a" and tr.other_processes == {11000: 1}
    mmap, munmap, bad = tr.calls
    assert mmap.text() == "mmap(0, 16 MiB, RW, PRIVATE|ANONYMOUS|POPULATE)"
    assert [(r.mode, r.how, r.hold_ns) for r in tr.locks_in(mmap)] == [("W", "", 20000), ("R", "", 10_000_000)]
    assert [(r.mode, r.how) for r in tr.locks_in(munmap)] == [("W", ""), ("R", "downgrade")]
    w, d = tr.locks_in(munmap)
    assert w.rel_ns == d.acq_ns == 247240805000 and d.hold_ns == 2_000_000
    (failed,) = tr.locks_in(bad)
    assert failed.how == "trylock" and failed.acq_ns == -1 and bad.ret == -4
    (fault,) = tr.faults
    (fl,) = [r for r in tr.locks if r.call == "fault"]
    assert fl.call_id == fault.call_id and fl.tid == 10905 and fault.exit_ns == fl.rel_ns


def test_wait_attributed_to_holder_from_text() -> None:
    """Thread 20 waits 10 ms for write while 10 populates under the read lock; 30, a reader that
    asked after 20, is queued behind the waiting writer (and 10 still holds)."""
    def line(comm: str, tid: int, us: int, rest: str) -> str:
        return f"{comm:>16s}-{tid:<7d} ({100:>7d}) [000] ..... {us // 1_000_000:5d}.{us % 1_000_000:06d}: {rest}\n"
    mm = "mm=00000000c7cbbc6a memcg_id=1"
    t = [line("pop", 10, 1000, "sys_mmap(addr: 0, len: 0x10000000, prot: 0x3, flags: 0x8022, fd: 0xffffffff, off: 0)"),
         line("pop", 10, 1001, f"mmap_lock_start_locking: {mm} write=true"),
         line("pop", 10, 1002, f"mmap_lock_acquire_returned: {mm} write=true success=true"),
         line("pop", 10, 1010, f"mmap_lock_released: {mm} write=true"),
         line("pop", 10, 1011, f"mmap_lock_start_locking: {mm} write=false"),
         line("pop", 10, 1012, f"mmap_lock_acquire_returned: {mm} write=false success=true"),
         line("victim", 20, 2000, "sys_munmap(addr: 0x1000, len: 0x1000)"),
         line("victim", 20, 2001, f"mmap_lock_start_locking: {mm} write=true"),
         line("faulter", 30, 3000, "page_fault_user: address=0x2000 ip=0x1 error_code=0x6"),
         line("faulter", 30, 3001, f"mmap_lock_start_locking: {mm} write=false"),
         line("pop", 10, 12001, f"mmap_lock_released: {mm} write=false"),
         line("pop", 10, 12002, "sys_mmap -> 0x7f0000000000"),
         line("victim", 20, 12003, f"mmap_lock_acquire_returned: {mm} write=true success=true"),
         line("victim", 20, 12010, f"mmap_lock_released: {mm} write=true"),
         line("faulter", 30, 12011, f"mmap_lock_acquire_returned: {mm} write=false success=true"),
         line("faulter", 30, 12012, f"mmap_lock_released: {mm} write=false"),
         line("victim", 20, 12020, "sys_munmap -> 0x0")]
    from mmlab.trace.analysis import stall_reports, thread_stats, worst_waits
    tr = records_from_lines(t, tgid=100)
    w1, w2 = worst_waits(tr, 2)
    assert (w1.tid, w1.mode, w1.call, round(w1.wait_us)) == (20, "W", "munmap(0x1000, 4 KiB)", 10002)
    (h,) = w1.holders
    assert (h.tid, h.mode, h.call, h.held_us) == (10, "R", "mmap(0, 256 MiB, RW, PRIVATE|ANONYMOUS|POPULATE)", 10989.0)
    assert (w2.tid, w2.mode, w2.call) == (30, "R", "fault(0x2000)")
    assert [q.tid for q in w2.queued_behind] == [20] and [x.tid for x in w2.holders] == [10, 20]
    stats = {s.tid: s for s in thread_stats(tr)}
    assert stats[20].count == 1 and round(stats[20].max_us) == 10002
    # The model's watchdog, unchanged, on the replayed state: one report per wait over 5 ms.
    reps = stall_reports(tr, 5.0)
    assert [(r.tid, r.mode) for r in reps] == [(20, "W"), (30, "R")]
    assert reps[0].holders[0].tid == 10 and reps[0].final_wait_ms == 10.002
    assert reps[1].queued_ahead[0]["tid"] == 20


def test_plot_timeline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest
    pytest.importorskip("matplotlib", reason="--plot needs the optional extra 'plot' (matplotlib)")
    from mmlab.report.trace_plot import plot_trace
    from mmlab.trace.analysis import worst_waits
    tr = records_from_lines(TEXT.splitlines(True), tgid=10905)
    out = tmp_path / "t.png"
    plot_trace(tr, str(out), worst_waits(tr, 3))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unavailable_reasons(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """One line saying why, for each way tracing can be unavailable (no tracefs is touched)."""
    import mmlab.trace.tracefs as tfs
    monkeypatch.setattr(tfs.sys, "platform", "darwin")
    assert tfs.unavailable_reason() == "not Linux (darwin): no tracefs"
    monkeypatch.setattr(tfs.sys, "platform", "linux")
    monkeypatch.setattr(tfs.os, "geteuid", lambda: 1000)
    assert tfs.unavailable_reason() == "not root: tracing instances need root"
    monkeypatch.setattr(tfs.os, "geteuid", lambda: 0)
    monkeypatch.setattr(tfs, "tracefs_root", lambda mount=True: None)
    assert "no tracefs" in (tfs.unavailable_reason() or "")
    (tmp_path / "instances").mkdir()
    (tmp_path / "trace_pipe").write_text("")
    (tmp_path / "events" / "mmap_lock").mkdir(parents=True)
    monkeypatch.setattr(tfs, "tracefs_root", lambda mount=True: str(tmp_path))
    assert tfs.unavailable_reason() == ("this kernel has no mmap_lock:mmap_lock_start_locking event "
                                        "(needs CONFIG_TRACING and Linux >= 5.10)")
