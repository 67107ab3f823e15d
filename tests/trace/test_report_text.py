"""What `mmlab trace` prints about a trace, and the readers' lost-event marks, on hand-made input
(no tracing needed): kept events only in the header, the lost count (known, marked, unknown), the
watchdog's reports, holds taken before the capture began."""

from __future__ import annotations

import argparse
import struct

import pytest

from mmlab.trace import records_from_lines
from mmlab.trace.capture import combine_lost
from mmlab.trace.parse import Parser
from mmlab.trace.raw import RawParser

MM = "mm=00000000c7cbbc6a memcg_id=1"
KID_MM = "mm=00000000deadbeef memcg_id=1"


def line(comm: str, tid: int, us: int, rest: str, tgid: int = 100) -> str:
    return f"{comm:>16s}-{tid:<7d} ({tgid:>7d}) [000] ..... {us // 1_000_000:5d}.{us % 1_000_000:06d}: {rest}\n"


def _populate_and_victim() -> list[str]:
    """pop (tid 10) populates under the read lock 1012..12001 us; victim (20) waits for write."""
    return [line("pop", 10, 1000, "sys_mmap(addr: 0, len: 0x10000000, prot: 0x3, flags: 0x8022, fd: 0xffffffff, off: 0)"),
            line("pop", 10, 1001, f"mmap_lock_start_locking: {MM} write=false"),
            line("pop", 10, 1012, f"mmap_lock_acquire_returned: {MM} write=false success=true"),
            line("victim", 20, 2000, "sys_munmap(addr: 0x1000, len: 0x1000)"),
            line("victim", 20, 2001, f"mmap_lock_start_locking: {MM} write=true"),
            line("pop", 10, 12001, f"mmap_lock_released: {MM} write=false"),
            line("pop", 10, 12002, "sys_mmap -> 0x7f0000000000"),
            line("victim", 20, 12003, f"mmap_lock_acquire_returned: {MM} write=true success=true"),
            line("victim", 20, 12010, f"mmap_lock_released: {MM} write=true"),
            line("victim", 20, 12020, "sys_munmap -> 0x0")]


def _children(n: int) -> list[str]:
    """A child process (tgid 200, its own mm): n acquisitions, 3 events each."""
    out = []
    for i in range(n):
        t = 20_000 + 10 * i
        out += [line("kid", 200, t, f"mmap_lock_start_locking: {KID_MM} write=true", 200),
                line("kid", 200, t + 1, f"mmap_lock_acquire_returned: {KID_MM} write=true success=true", 200),
                line("kid", 200, t + 2, f"mmap_lock_released: {KID_MM} write=true", 200)]
    return out


def _report(tr, capsys, **kw) -> str:  # type: ignore[no-untyped-def]
    from mmlab.report.trace_cmd import _report as report
    a = dict(worst=5, stall_ms=None, json=None, plot=None, perfetto=None, text=True)
    a.update(kw)
    report(argparse.Namespace(**a), tr, "prog (pid 100)", 1.0)
    return capsys.readouterr().out


def _header(out: str) -> str:
    return out.splitlines()[0]


def test_header_counts_only_the_kept_process(capsys) -> None:  # type: ignore[no-untyped-def]
    """A child process's 40 acquisitions are not the traced process's: the header counts the 2
    kept ones and its 10 events, and says how many events the hidden child had."""
    tr = records_from_lines(_populate_and_victim() + _children(40), tgid=100)
    assert tr.other_processes == {200: 120}
    out = _report(tr, capsys)
    head = _header(out)
    assert "10 events (2 mmap_lock acquisitions, 2 mm calls, 0 user faults), lost 0" in head, head
    assert "not shown: 120 more events of 1 child process(es)" in out
    # More children move the hidden count, never the header's.
    tr2 = records_from_lines(_populate_and_victim() + _children(80), tgid=100)
    out2 = _report(tr2, capsys)
    assert _header(out2) == head and "not shown: 240 more events" in out2


def test_watchdog_reports_are_printed_with_stall_ms(capsys) -> None:  # type: ignore[no-untyped-def]
    tr = records_from_lines(_populate_and_victim(), tgid=100)
    out = _report(tr, capsys, stall_ms=5.0)
    assert "replayed over the trace at 5 ms: 1 report(s)" in out
    (info,) = [ln for ln in out.splitlines() if "INFO: task victim:20 blocked for more than" in ln]
    assert "(the wait lasted 10.0 ms)" in info
    assert any("held by pop:10 (read)" in ln for ln in out.splitlines())
    assert "watchdog" not in _report(tr, capsys)  # only when asked
    # A bound above every wait: the watchdog reports nothing.
    assert "replayed over the trace at 50 ms: 0 report(s)" in _report(tr, capsys, stall_ms=50.0)


def test_hold_taken_before_the_capture_is_named(capsys) -> None:  # type: ignore[no-untyped-def]
    """--pid attach: pop took the read lock before the capture began (no start/acquire seen); the
    victim that waited for it is shown as waiting behind a hold from before the capture."""
    lines = [ln for ln in _populate_and_victim() if "12002" in ln or "mmap_lock" in ln or "munmap" in ln]
    lines = [ln for ln in lines if not ln.split(": ", 1)[0].endswith(("0.001001", "0.001012"))]
    tr = records_from_lines(lines, tgid=100)
    assert tr.early_releases == [(12_001_000, 10, "R")]
    out = _report(tr, capsys, stall_ms=5.0)
    assert "held by pop:10 (read) since before the capture began: released 10.00ms after this wait began" in out
    assert "victim:20 10.00ms for write in munmap(0x1000, 4 KiB) behind pop:10 (read) held since before" in out
    assert "1 hold(s) taken before the capture began were released during it" in out
    # Without the early release, "nobody seen" lists that possibility.
    tr.early_releases = []
    assert "a hold taken before the capture began" in _report(tr, capsys)


def test_lost_lines_of_the_text_are_counted_per_cpu() -> None:
    p = Parser()
    p.feed(["CPU:1 [LOST 17 EVENTS]\n", "CPU:1 [LOST 3 EVENTS]\n", "CPU:0 [LOST EVENTS]\n",
            *_populate_and_victim()])
    assert p.missed_per_cpu == {1: 20, 0: 1} and p.bad == 0 and len(p.events) == 10


class _NoEvents:
    kinds: dict = {}


def _page(missed: int | None, stored: bool) -> bytes:
    commit = 0
    if missed is not None:
        commit |= 1 << 31
        if stored:
            commit |= 1 << 30
    return struct.pack("<Qq", 123, commit) + (struct.pack("<Q", missed or 0) if stored else b"") + bytes(64)


def test_raw_pages_missed_marks_are_counted_per_cpu() -> None:
    p = RawParser(_NoEvents())  # type: ignore[arg-type]
    p.feed_page(_page(None, False), 0)
    p.feed_page(_page(250, True), 1)
    p.feed_page(_page(0, False), 1)     # RB_MISSED_EVENTS with no room for the count: at least one
    p.feed_page(_page(7, True), 3)
    assert p.missed_per_cpu == {1: 251, 3: 7} and p.missed_pages == 3 and p.missed_events == 258


def test_lost_combines_stats_and_marks_and_is_unknown_when_unreadable() -> None:
    # The marks count overwritten events the stats' overrun counts too: the larger, not the sum.
    assert combine_lost({0: 100, 1: 5}, {0: 60, 1: 9}) == ({0: 100, 1: 9}, [])
    # A CPU whose stats could not be read: unknown, and at least what was marked.
    assert combine_lost({0: 0, 1: None}, {1: 4}) == ({0: 0, 1: 4}, [1])
    assert combine_lost({0: None}, {}) == ({0: 0}, [0])


def test_unknown_loss_is_reported_as_unknown(capsys) -> None:  # type: ignore[no-untyped-def]
    tr = records_from_lines(_populate_and_victim(), tgid=100)
    tr.lost_per_cpu, tr.lost, tr.lost_unknown, tr.missed = {0: 0, 1: 4}, 4, [1], 4
    out = _report(tr, capsys)
    assert "lost unknown (the stats of CPU 1 could not be read; at least 4)" in _header(out)
    assert "the kernel marked 4 of them missed" in out
    tr.lost_unknown = []
    assert _header(_report(tr, capsys)).endswith("lost 4")


def test_calls_in_matches_a_stamped_call() -> None:
    tr = records_from_lines(_populate_and_victim() + [
        line("victim", 20, 12030, "sys_munmap(addr: 0x2000, len: 0x1000)"),
        line("victim", 20, 12031, "sys_munmap -> 0x0"),
        line("victim", 20, 12040, "page_fault_user: address=0x7f0000000010 ip=0x1 error_code=0x6")], tgid=100)
    us = 1000
    (mm,) = tr.calls_in(10, "mmap", 999 * us, 1001 * us)
    assert mm.args[1] == 0x10000000 and tr.call_in(10, "mmap", 999 * us, 1001 * us) is mm
    assert tr.calls_in(20, "mmap", 0, 1 << 40) == [] and tr.calls_in(30, None, 0, 1 << 40) == []
    both = tr.calls_in(20, "munmap", 0, 1 << 40)
    assert len(both) == 2 and tr.call_in(20, "munmap", 0, 1 << 40) is None  # two: not one
    (second,) = tr.calls_in(20, "munmap", 0, 1 << 40, args=(0x2000,))   # args choose among several
    assert second.args[0] == 0x2000
    assert len(tr.calls_in(20, "munmap", 0, 1 << 40, args=(0x9000,))) == 2  # none has them: all stay
    assert tr.calls_in(20, None, 0, 1 << 40, args=(0x9000,), exact=True) == []
    assert len(tr.calls_in(20, "munmap", 2001 * us, 2001 * us, slack_ns=2 * us)) == 1  # entered at 2000 us
    assert tr.calls_in(20, "munmap", 2003 * us, 2004 * us, slack_ns=2 * us) == []
    assert [f.args[0] for f in tr.calls_in(20, "fault", 0, 1 << 40, args=(0x7F0000000FF0,))] == [0x7F0000000010]
    assert tr.calls_in(20, "fault", 0, 1 << 40, args=(0x7F0000001000,)) == []  # another page


@pytest.mark.parametrize("stats,cell", [
    ({"p50_us": 1.0, "p99_us": 1.0, "p999_us": 1.0, "max_us": 0.0}, "0 / 0 / 0 / 0"),
    ({"p50_us": 11.0, "p99_us": 95.0, "p999_us": 95.0, "max_us": 90.0}, "11us / 90us / 90us / 90us"),
])
def test_real_latency_cells_never_show_a_percentile_above_the_max(stats, cell) -> None:  # type: ignore[no-untyped-def]
    from mmlab.report.real_cmd import _cell
    assert _cell(stats) == cell
