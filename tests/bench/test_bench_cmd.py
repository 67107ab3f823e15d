"""`mmlab bench`: the listing, the JSON shape of a small run, the runner's statistics and verdicts,
and bad arguments. No timing assertions: the benchmark numbers themselves are not tested here."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from mmlab.bench import REGISTRY, Benchmark, Goal, Row, Run, run_benchmark
from mmlab.cli import main

ROW_KEYS = {"name", "unit", "median", "min", "max", "runs", "goal", "met"}


def test_list_names_every_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    for name in REGISTRY:
        assert name in out


def test_small_run_writes_json_matching_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bench.json"
    rc = main(["bench", "mmap_sem", "--quick", "--json", str(f)])
    out = capsys.readouterr().out
    doc = json.loads(f.read_text())
    # the exit status is the goals' verdict: 1 exactly when a measured goal is not met (or a row broke)
    unmet = [r["name"] for r in doc["results"] if r["status"] != "ok" or r["met"] is False]
    assert rc == (1 if unmet else 0), (rc, unmet)
    assert doc["quick"] is True and doc["machine"]["python"]
    rows = {r["name"]: r for r in doc["results"]}
    assert set(rows) == {r.name for r in REGISTRY["mmap_sem"].rows}
    for r in doc["results"]:
        assert ROW_KEYS <= set(r)
        assert r["name"].split(".", 1)[1] in out  # every JSON row is in the table
    ratio = rows["mmap_sem.write_ratio"]
    assert ratio["status"] == "ok" and ratio["runs"] >= 5 and len(ratio["samples"]) == ratio["runs"]
    assert ratio["min"] <= ratio["median"] <= ratio["max"]
    assert ratio["goal_op"] == "<=" and ratio["goal_value"] == 1.5
    assert ratio["met"] == (ratio["median"] <= 1.5)
    assert rows["mmap_sem.write_bare"]["met"] is None  # a reference row has no goal


def test_a_pending_benchmark_is_reported_never_run() -> None:
    def setup(quick: bool) -> Run:
        raise AssertionError("a pending benchmark must not be set up")

    b = Benchmark("later", "a feature not on main", [Row("later.x", "u", Goal(">=", 1))], setup,
                  pending="pending: the feature not on main")
    [r] = run_benchmark(b, quick=True)
    assert r.status == "pending" and r.median is None and r.met is None and r.runs == 0
    assert r.note == "pending: the feature not on main" and r.goal_value == 1


@pytest.mark.parametrize("argv", [["bench", "--runs", "3"], ["bench", "no-such-benchmark"],
                                  ["bench", "--max-spread", "0"]])
def test_bad_arguments_exit_2_and_run_nothing(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().out == ""


def _fake(values: list[float], goal: Goal) -> Benchmark:
    it = iter(values)
    closed: list[bool] = []

    def setup(quick: bool) -> Run:
        return Run(lambda: {"fake.x": next(it)}, close=lambda: closed.append(True))

    b = Benchmark("fake", "a fake", [Row("fake.x", "u", goal)], setup)
    b.closed = closed  # type: ignore[attr-defined]
    return b


def test_runner_discards_warm_up_and_takes_median_min_max() -> None:
    b = _fake([1000.0, 5, 1, 3, 2, 4], Goal("<=", 3))  # 1000 is the warm-up
    [r] = run_benchmark(b, quick=False)
    assert (r.median, r.min, r.max, r.runs) == (3, 1, 5, 5)
    assert r.samples == [5, 1, 3, 2, 4]
    assert r.met is True
    assert r.trusted is False and "spread" in r.note  # (5-1)/3 > 0.5, and the goal lies inside it
    assert b.closed == [True]  # type: ignore[attr-defined]


def test_runner_verdict_moves_with_the_goal_and_tight_spread_is_trusted() -> None:
    vals = [0.0, 10, 10.1, 9.9, 10, 10.05]
    [met] = run_benchmark(_fake(vals, Goal(">=", 9)), quick=False)
    [unmet] = run_benchmark(_fake(vals, Goal(">=", 11)), quick=False)
    assert met.met is True and unmet.met is False
    assert met.trusted and unmet.trusted and met.note == ""


def test_runner_reports_a_broken_benchmark_as_an_error_row() -> None:
    def setup(quick: bool) -> Run:
        c = itertools.count()
        return Run(lambda: {"fake.x": 1 / (1 - next(c))})  # the warm-up passes, run 1 divides by 0

    [r] = run_benchmark(Benchmark("fake", "", [Row("fake.x", "u")], setup), quick=False)
    assert r.status == "error" and "ZeroDivisionError" in r.note and r.median is None


def test_find_vma_looks_up_fresh_random_addresses_over_the_whole_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every round of the vma_index benchmark draws new addresses, spread over all the vmas (the
    benchmark's own code, run on small indexes instead of 65,530 vmas)."""
    from mmlab.bench import syscalls
    from mmlab.mm.vma import VmaTree
    sizes = (10, 200, 600)
    monkeypatch.setattr(syscalls, "SIZES", sizes)
    run = REGISTRY["vma_index"].setup(True)  # type: ignore[misc]
    calls: list[tuple[int, int]] = []  # (id of the index, address), in call order
    trees: dict[int, VmaTree] = {}
    real_find = VmaTree.find_vma

    def recording(self: VmaTree, addr: int):
        trees[id(self)] = self
        calls.append((id(self), addr))
        return real_find(self, addr)
    monkeypatch.setattr(VmaTree, "find_vma", recording)
    monkeypatch.setattr(syscalls, "_pairs_model", lambda mm, k: 1)  # only the lookups are looked at
    run.step()
    rounds: dict[int, list[tuple[int, ...]]] = {}  # index -> its batches, one per round
    batch: list[int] = []
    for i, (t, a) in enumerate(calls):
        batch.append(a)
        if i + 1 == len(calls) or calls[i + 1][0] != t:
            rounds.setdefault(t, []).append(tuple(batch))
            batch = []
    big = [t for t in rounds if len(list(trees[t])) > 10]
    assert len(big) == 2
    for t in big:
        n = len(list(trees[t]))
        bs = rounds[t]
        assert len(bs) == syscalls.ROUNDS and len(set(bs)) == len(bs), "a round repeated an earlier round's addresses"
        addrs = [a for b in bs for a in b]
        span = 2 * (n - 1) * 4096
        assert max(addrs) >= syscalls._BASE + 0.9 * span and min(addrs) < syscalls._BASE + 0.1 * span
        found = [real_find(trees[t], a) for a in addrs]
        hit = {v.start for v in found if v is not None}
        assert len(hit) >= 0.8 * (n - 1), f"{len(hit)} of {n - 1} vmas looked up"


def test_controlled_rates_nest_from_inside_to_end_to_end() -> None:
    """The controlled benchmark reports every declared row, and the rate over more of the work is
    never the higher one: inside the controller >= explore()'s own >= the whole call timed outside."""
    b = REGISTRY["controlled"]
    got = b.setup(True).step()  # type: ignore[misc]
    assert set(got) == {r.name for r in b.rows}
    assert got["controlled.schedule_points"] >= got["controlled.exploration"] >= got["controlled.end_to_end"] > 0
