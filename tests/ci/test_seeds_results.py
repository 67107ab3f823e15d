"""Seed ranges, shards, and the merge of per-worker results (counts add, HDR histograms add exactly)."""

from __future__ import annotations

import json
import random

import pytest

from mmlab.ci.results import Failure, Results, Row, merge_docs
from mmlab.ci.seeds import format_seeds, parse_seeds, parse_shard, shard
from mmlab.harness.histograms import decode


def test_seed_ranges_as_written() -> None:
    assert parse_seeds("50") == range(50)
    assert parse_seeds(3) == range(3)
    assert parse_seeds("100..199") == range(100, 200)
    assert parse_seeds(" 7..7 ") == range(7, 8)
    assert format_seeds(parse_seeds("100..199")) == "100..199"


@pytest.mark.parametrize("bad", ["", "0", "-3", "5..2", "a..b", "1..2..3", "1.5", True, None])
def test_bad_seed_ranges_are_rejected_with_a_reason(bad: object) -> None:
    with pytest.raises(ValueError, match="seed"):
        parse_seeds(bad)


def test_shards_are_disjoint_and_cover_the_range() -> None:
    seeds = parse_seeds("10..109")
    parts = [shard(seeds, i, 4) for i in range(1, 5)]
    got = sorted(s for p in parts for s in p)
    assert got == list(seeds)
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "2", "a/b", ""):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def _worker_results(rng: random.Random, wid: str) -> Results:
    """A worker's results with random counts and random latency samples in two rows."""
    res = Results()
    for kernel in ("v3.9", "bounded"):
        row = Row("populate-race", kernel, "populate-file", "munmap-mmap", seeds=rng.randint(1, 5))
        row.rounds = rng.randint(1, 40)
        row.window_hits = rng.randint(0, row.rounds)
        forb = rng.randint(0, row.rounds) if kernel == "v3.9" else 0
        row.outcomes = {"OK": row.rounds - forb, "INTERESTING": 0, "FORBIDDEN": forb}
        row.wrong_pages = 256 * forb
        row.failed_seeds = sorted(rng.sample(range(100), rng.randint(0, 3)))
        for _ in range(rng.randint(1, 300)):
            row.hist("racer_wait").record_value(rng.randint(1_000, 50_000_000))
        res.add_row(row)
    res.add_failure(Failure(f"stress/x.toml::x[v3.9-seed{rng.randint(0, 99)}]", 1, "v3.9", "FORBIDDEN", "", ["pytest x"]))
    res.count_item("passed")
    return res


def test_merged_counts_are_the_sum_and_histograms_the_exact_merge() -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    docs = [(f"gw{i}", json.loads(json.dumps(_worker_results(rng, f"gw{i}").as_dict()))) for i in range(3)]
    merged = merge_docs(docs)
    doc = json.loads(json.dumps(merged.document(seeds="0..9")))
    assert set(doc["workers"]) == {"gw0", "gw1", "gw2"}, seed
    for row in doc["results"]:
        parts = [r for _, d in docs for r in d["results"] if r["kernel"] == row["kernel"]]
        for key in ("seeds", "rounds", "window_hits", "wrong_pages"):
            assert row[key] == sum(p[key] for p in parts), (seed, key)
        for g in ("OK", "INTERESTING", "FORBIDDEN"):
            assert row["outcomes"][g] == sum(p["outcomes"][g] for p in parts), (seed, g)
        assert row["failed_seeds"] == sorted({s for p in parts for s in p["failed_seeds"]})
        m = decode(row["histograms"]["racer_wait"]["blob"])
        hs = [decode(p["histograms"]["racer_wait"]["blob"]) for p in parts]
        assert m.get_total_count() == sum(h.get_total_count() for h in hs), seed
        for i in range(m.counts_len):  # bucket by bucket: an exact add, not an approximation
            assert m.get_count_at_index(i) == sum(h.get_count_at_index(i) for h in hs)
        assert m.get_max_value() == max(h.get_max_value() for h in hs)
    assert len(doc["failures"]) == 3
    assert doc["items"]["passed"] == 3
    assert doc["totals"]["rounds"] == sum(r["rounds"] for _, d in docs for r in d["results"])


def test_results_round_trip_through_json() -> None:
    res = _worker_results(random.Random(5), "main")
    back = Results.from_dict(json.loads(json.dumps(res.as_dict())))
    assert back.as_dict() == res.as_dict()
