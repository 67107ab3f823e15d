"""`mmlab compare` on tiny sizes: the reference is the profile that claims this kernel by version,
a switch-flipped variant is marked beside it; the exit status follows the reference only."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mmlab.cli import main
from mmlab.kernels import claiming_profile
from mmlab.report.compare_cmd import _mark, _race_key

TINY = ["--populator", "populate-anon", "--sizes", "1M,2M", "--rounds", "1", "--race-populator", "populate-anon",
        "--racer", "mprotect", "--race-size", "1M", "--race-rounds", "1"]


def test_the_reference_is_claimed_by_version_and_a_variant_is_marked(tmp_path: Path) -> None:
    out = tmp_path / "cmp.json"
    rc = main(["compare", "--kernel", "v6.18+per_vma_lock=off", *TINY, "--json", str(out)])
    d = json.loads(out.read_text())
    ref = claiming_profile(os.uname().release)
    assert d["reference"] == ref and d["release"] == os.uname().release
    if ref is not None:  # added although --kernel did not name it
        assert d["marked"] == [ref, "v6.18+per_vma_lock=off"] if ref == "v6.18" else d["marked"][0] == ref
        assert {r["kernel"] for r in d["results"]} >= {"real", ref, "v6.18+per_vma_lock=off"}
        assert set(d["disagreements_by_profile"]) == set(d["marked"])
    assert rc == (1 if d["disagreements"] or d["race_errors"] or d["latency_not_observed"] else 0)
    assert d["timing"]["race"] and set(d["timing"]["race"]) <= {"traced", "wall"}
    # the models ran on dilated clocks (modelled time), each k said, the residual with it
    assert set(d["time"]["model_k"]) == {r["kernel"] for r in d["results"]} - {"real"} and all(k >= 1 for k in d["time"]["model_k"].values())
    assert d["time"]["dilation"]["residual_ns"] > 0


def test_marks_count_disagreements_per_profile() -> None:
    counts = {"v6.18": 0, "v6.18+per_vma_lock=off": 0}
    yes = {"outcomes": {"OK": 0, "INTERESTING": 0, "FORBIDDEN": 2, "ERROR": 0}, "window_hits": 2}
    no = {"outcomes": {"OK": 2, "INTERESTING": 0, "FORBIDDEN": 0, "ERROR": 0}, "window_hits": 1}
    errors = {"outcomes": {"OK": 0, "INTERESTING": 0, "FORBIDDEN": 0, "ERROR": 2}, "window_hits": 0}
    assert _mark(yes, yes, _race_key, counts, "v6.18") == "="
    assert "!=" in _mark(yes, no, _race_key, counts, "v6.18+per_vma_lock=off")
    assert _mark(errors, no, _race_key, counts, "v6.18") == "?"  # nothing graded: neither = nor !=
    assert counts == {"v6.18": 0, "v6.18+per_vma_lock=off": 1}
