"""`mmlab tune`: bad arguments refused before anything runs; a tiny sweep's JSON, table and plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmlab.cli import main
from mmlab.report import tune_cmd

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("args,msg", [
    ([], "--sweep"),
    (["--sweep", "no_such_switch=1,2"], "unknown switch"),
    (["--sweep", "populate_batch_pages=64"], "at least two values"),
    (["--sweep", "populate_batch_pages=a,b"], "whole number"),
    (["--sweep", "populate_batch_pages=1,2", "--sweep", "populate_batch_pages=3,4"], "must differ"),
    (["--sweep", "populate_batch_pages=1,2", "--populator", "populate-anon,populate-file"], "one populator"),
    (["--sweep", "populate_batch_pages=1,2", "--dilation", "0.5"], "--dilation"),
    (["--sweep", "populate_batch_pages=1,2", "--repeats", "0"], "--repeats"),
    (["--sweep", "populate_batch_pages=1,2", "--victims", "fault"], "--victims"),
    (["--sweep", "populate_batch_pages=1,2", "--victims", "writer,x"], "--victims: unknown x"),
])
def test_bad_arguments_exit_2_and_run_nothing(args: list[str], msg: str, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    ran = []
    monkeypatch.setattr(tune_cmd, "_report", lambda *a: ran.append(a) or 0)
    assert main(["tune", *args]) == 2
    assert msg in capsys.readouterr().err
    assert not ran


def test_a_small_sweep_has_every_point_the_reference_and_a_plot(tmp_path: Path, seed: int,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "t.json", tmp_path / "t.png"
    # under mmap_sem (populate_vma_lock off), where the batch decides the writer's wait
    rc = main(["tune", "--kernel", "bounded+populate_vma_lock=off", "--sweep", "populate_batch_pages=64,2048",
               "--size", "16M", "--repeats", "1",
               "--residual-us", "8", "--seed", str(seed), "--json", str(out), "--plot", str(png)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "Pareto" in text and "residual" in text and "v6.18 (reference)" in text
    d = json.loads(out.read_text())
    assert d["time"]["k"] >= 1 and d["time"]["residual_ns"] > 0
    pts = {p["kernel"]: p for p in d["points"]}
    assert set(pts) == {"bounded+populate_vma_lock=off+populate_batch_pages=64",
                        "bounded+populate_vma_lock=off+populate_batch_pages=2048", "v6.18"}
    for p in pts.values():
        assert p["worst_wait_ms"] > 0 and p["slowdown"] > 0 and len(p["runs"]["populate_ms"]) == 1
    small, ref = pts["bounded+populate_vma_lock=off+populate_batch_pages=64"], pts["v6.18"]
    assert ref["reference"] and not ref["pareto"]
    # today's writer waits out the populate; 64-page batches let it in after ~0.1 ms of work
    assert small["worst_wait_ms"] < ref["worst_wait_ms"]
    assert small["runs"]["yields"][0] > 0 and ref["runs"]["yields"] == [0]
    assert any(p["pareto"] for p in pts.values())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_costs_profile_moves_the_populate_and_is_named(tmp_path: Path, seed: int,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from mmlab.clock import DEFAULT_COSTS
    slow = tmp_path / "slow.toml"
    slow.write_text(f"[costs]\nanon_page_ns = {DEFAULT_COSTS.anon_page_ns * 4}\n")
    docs = {}
    for name, costs in (("builtin", "builtin"), ("slow", str(slow))):
        out = tmp_path / f"{name}.json"
        rc = main(["tune", "--sweep", "populate_batch_pages=64,512", "--size", "4M", "--repeats", "1",
                   "--reference", "none", "--residual-us", "8", "--seed", str(seed), "--costs", costs,
                   "--json", str(out)])
        text = capsys.readouterr().out
        assert rc == 0, text
        docs[name] = json.loads(out.read_text())
        assert ("costs: built-in" in text) == (name == "builtin") and (str(slow) in text.replace("\n", "")) == (name == "slow")
    assert docs["slow"]["costs"]["costs"]["anon_page_ns"] == DEFAULT_COSTS.anon_page_ns * 4
    alone = {n: d["points"][0]["runs"]["alone_ms"][0] for n, d in docs.items()}
    # 4x the per-page cost: the populate alone takes several times as long in modelled time
    assert alone["slow"] > 2.5 * alone["builtin"], alone
