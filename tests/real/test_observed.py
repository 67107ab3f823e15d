"""What was not observed is never a measurement: a writer victim call with no mmap_lock record is
not a 0 us wait, a race cell with no window hit is not "not populated", and every target of
`mmlab compare` is closed on every way out."""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from mmlab.cli import main
from mmlab.real import scenarios as S
from mmlab.report import real_cmd
from mmlab.report.compare_cmd import _mark, _race_cell, _race_key
from mmlab.report.console import console


class _Ev:
    """Lock records of one round: the writer's mmap waited 5 us; its mprotect and munmap have none."""

    def call_waits(self, tids: dict[int, str], lo: int, hi: int) -> dict[str, list[int]]:
        return {"mmap": [5000]}


class _V:
    tids: dict[int, str] = {}
    mprotect = True


KEPT = [("fault", 10, 20), ("fault", 30, 40), ("mmap", 10, 20), ("mprotect", 20, 30), ("munmap", 30, 90)]


def test_a_writer_call_without_a_lock_record_is_no_zero_wait() -> None:
    locks = S._lock_samples(_Ev(), _V(), KEPT, 0, 100)  # type: ignore[arg-type]
    assert sorted(locks) == [("fault", 0, 0), ("fault", 0, 0), ("mmap", 0, 5000)]  # per-VMA-lock faults: zero waits
    # the writer was blocked in mmap: its mprotect and munmap asked outside the populate, no miss
    assert S._unobserved(_V(), KEPT, locks, asked=True) == []  # type: ignore[arg-type]
    assert S._unobserved(_V(), KEPT, locks, asked=False) == ["writer"]  # type: ignore[arg-type]
    assert S._unobserved(_V(), KEPT[2:], None) == ["fault"]  # type: ignore[arg-type]  # wall: the reader never ran
    assert S._unobserved(_V(), KEPT[:2], None) == ["writer"]  # type: ignore[arg-type]  # wall: the writer never ran


def test_a_writer_that_never_asked_while_the_populate_held_the_lock_measured_nothing() -> None:
    """The reviewer's case: the writer took the lock just before the populate did (a 0 us wait in
    the window), then sat descheduled through the populate's 14 ms hold."""
    from mmlab.real.evidence import LockRec
    pop = [LockRec(1, "W", 1_000, 1_000, 2_000, tid=10, call="mmap"), LockRec(1, "R", 2_000, 2_000, 14_000_000,
                                                                             tid=10, call="mmap")]
    early = LockRec(5, "W", 500, 500, 900, tid=20, call="munmap")
    blocked = LockRec(6, "W", 3_000, 14_000_001, 14_000_100, tid=20, call="mmap")

    class Ev:
        def __init__(self, recs: list[LockRec]) -> None:
            self.recs = recs

        def lock_records(self) -> list[LockRec]:
            return self.recs

    v = _V()
    v.tids = {20: "writer", 30: "fault"}
    assert S._writer_asked(Ev(pop + [early]), v, 10, 0, 15_000_000) is False  # type: ignore[arg-type]
    assert S._writer_asked(Ev(pop + [early, blocked]), v, 10, 0, 15_000_000) is True  # type: ignore[arg-type]
    assert S._writer_asked(Ev([early]), v, 10, 0, 15_000_000) is False  # type: ignore[arg-type]  # no populate seen
    # in the gap between mmap's write hold and the populate's read hold: not inside the populate
    gap = LockRec(7, "W", 1_500, 1_500, 1_900, tid=20, call="munmap")
    pop_gap = [pop[0], LockRec(1, "R", 2_000, 2_000, 14_000_000, tid=10, call="mmap")]
    assert S._writer_asked(Ev(pop_gap + [gap]), v, 10, 0, 15_000_000) is False  # type: ignore[arg-type]
    # stamped in that gap (queued behind the populate's read request, or it lost the GIL before it
    # queued) and granted only when the hold ended: it waited out the populate
    queued = LockRec(9, "W", 1_500, 14_000_001, 14_000_100, tid=20, call="mmap")
    assert S._writer_asked(Ev(pop_gap + [queued]), v, 10, 0, 15_000_000) is True  # type: ignore[arg-type]
    # between two read holds of a file populate (a disk wait dropped the lock): inside it
    yielded = [LockRec(1, "R", 2_000, 2_000, 5_000, tid=10, call="mmap"),
               LockRec(1, "R", 9_000, 9_000, 14_000_000, tid=10, call="mmap")]
    between = LockRec(8, "W", 6_000, 6_000, 6_100, tid=20, call="mprotect")
    assert S._writer_asked(Ev(yielded + [between]), v, 10, 0, 15_000_000) is True  # type: ignore[arg-type]
    assert S._writer_asked(None, v, 10, 0, 1) is None  # type: ignore[arg-type]
    every = [("fault", 0, 0), ("mmap", 0, 1), ("mprotect", 0, 1), ("munmap", 0, 1)]
    assert S._unobserved(v, KEPT, every, asked=False) == ["writer"]  # type: ignore[arg-type]
    assert S._unobserved(v, KEPT, every, asked=True) == []  # type: ignore[arg-type]


def _run(kernel: str, size: int, victim: dict[str, Any], not_observed: list[str]) -> dict[str, Any]:
    return {"kernel": kernel, "populator": "populate-anon", "size_bytes": size, "populate_ms": size / (1 << 20),
            "victim": victim, "not_observed": not_observed}


def _w(us: float) -> dict[str, float]:
    return {"count": 5, "p50_us": us, "p99_us": us, "p999_us": us, "max_us": us, "worst_us": us}


def test_a_size_not_observed_gives_no_verdict_but_an_error(tmp_path: Path) -> None:
    floor = {"victim": {"writer": _w(5.0), "munmap": _w(5.0)}, "timing": "traced"}
    runs = [_run("real", 16 << 20, {"writer": _w(14000.0), "munmap": _w(14000.0)}, []),
            _run("real", 32 << 20, {"writer": dict(_w(0.0), observed=False),
                                    "munmap": dict(_w(0.0), count=0, observed=False)}, ["writer", "munmap"])]
    vs = {v["op"]: v for v in S.verdicts(runs, floor)}
    assert vs["writer"]["bounded"] is None and vs["writer"]["not_observed"] and "32 MiB" in vs["writer"]["why"]
    assert vs["munmap"]["bounded"] is None
    out = io.StringIO()
    args = type("A", (), {"json": str(tmp_path / "l.json"), "timing": "auto", "expect_bounded": False})()
    rc = real_cmd._latency_out(console(file=out, width=300), args, "real", runs, floor, {})
    assert rc == 1
    text = out.getvalue()
    assert "not observed real populate-anon 32M: writer:" in text
    assert json.loads((tmp_path / "l.json").read_text())["not_observed"] == 1
    # a call kind the blocked writer never reached is shown, and is no error: the pooled writer was seen
    runs[1] = dict(runs[1], victim={"writer": _w(28000.0), "munmap": dict(_w(0.0), count=0, observed=False)},
                   not_observed=["munmap"])
    out = io.StringIO()
    assert real_cmd._latency_out(console(file=out, width=300), args, "real", runs, floor, {}) == 0
    assert "no munmap call asked" in out.getvalue()
    assert {v["op"]: v["bounded"] for v in S.verdicts(runs, floor)} == {"writer": False, "munmap": None}


def test_a_round_not_observed_is_run_again_then_the_cell_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def never(v: Any, kept: Any, locks: Any, asked: Any = None) -> list[str]:
        calls.append(1)
        return ["writer"]

    monkeypatch.setattr(S, "_unobserved", never)
    t = S.ModelTarget("v6.18", lock_waits=True)
    try:
        r = S.run_latency_cell(t, S.POPULATORS["populate-anon"], 1 << 20, rounds=2)
    finally:
        t.close()
    assert len(calls) == 2 * S.OBSERVE_TRIES and r["reruns_unobserved"] == 2 * (S.OBSERVE_TRIES - 1)
    # a round that did not test the size leaves no call kind's worst wait standing
    assert r["not_observed"] == ["writer", "mmap", "mprotect", "munmap"] and r["victim"]["munmap"]["observed"] is False


def test_a_race_with_no_window_hit_is_not_observed() -> None:
    counts = {"v6.18": 0}
    hit = {"outcomes": {"OK": 2, "INTERESTING": 0, "FORBIDDEN": 0, "ERROR": 0}, "window_hits": 1, "rounds": 2}
    missed = dict(hit, window_hits=0, window_unknown=1)
    forbidden = {"outcomes": {"OK": 0, "INTERESTING": 0, "FORBIDDEN": 2, "ERROR": 0}, "window_hits": 2, "rounds": 2}
    assert _race_key(hit) is False and _race_key(missed) is None and _race_key(forbidden) is True
    assert _mark(missed, forbidden, _race_key, counts, "v6.18") == "?" and counts["v6.18"] == 0
    assert "?" in _race_cell(missed) and "no window hit" in _race_cell(missed)
    assert "!=" in _mark(hit, forbidden, _race_key, counts, "v6.18") and counts["v6.18"] == 1


def test_window_hits_with_unknown_rounds_are_shown() -> None:
    r = {"window_hits": 2, "window_unknown": 1}
    assert real_cmd.window_cell(r) == "2 (+1 unknown)" and real_cmd.window_cell(dict(r, window_unknown=0)) == "2"
    out = io.StringIO()
    real_cmd.race_problems(console(file=out, width=300), [dict(r, kernel="real", populator="populate-file",
                                                                racer="mprotect", first_forbidden=None)])
    assert "1 round(s) with the window hit unknown" in out.getvalue()


def test_compare_closes_its_targets_when_a_run_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[S.RealTarget] = []
    init = S.RealTarget.__init__

    def record(self: S.RealTarget, *a: Any, **k: Any) -> None:
        init(self, *a, **k)
        made.append(self)

    def fail(t: Any, ms: int = 200) -> dict[str, Any]:
        raise RuntimeError("trace reader failed")

    monkeypatch.setattr(S.RealTarget, "__init__", record)
    monkeypatch.setattr(S, "run_noise_floor", fail)
    with pytest.raises(RuntimeError, match="trace reader failed"):
        main(["compare", "--kernel", "v6.18", "--sizes", "1M,2M", "--rounds", "1"])
    assert made and not any(os.path.exists(t._dir) for t in made)


def test_real_files_are_named_without_the_random_module(tmp_path: Path) -> None:
    t = S.RealTarget()
    try:
        random.seed(7)
        expected = random.random()
        random.seed(7)
        f = t.file(1 << 20)
        try:
            assert random.random() == expected  # the file's name drew nothing from the seeded stream
            assert os.path.dirname(f.path) == t._dir and f.path.endswith(".dat")
        finally:
            t.close_file(f)
    finally:
        t.close()
