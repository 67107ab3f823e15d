"""`mmlab sweep`: arguments checked before anything runs, exit codes, shards, merged JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmlab.cli import main


@pytest.mark.parametrize("argv, msg", [
    (["--seeds", "5..1"], "empty seed range"),
    (["--seeds", "ten"], "not a seed range"),
    (["--shard", "3/2"], "shard"),
    (["--workers", "0"], "--workers"),
    (["--kernel", "v9.9", "--populator", "populate-file"], "unknown kernel"),
    (["--populator", "populate-nothing"], "unknown populator"),
    (["--rounds", "0", "--populator", "populate-file"], "--rounds"),
    (["no/such/suites"], "no such suite file"),
])
def test_bad_arguments_exit_2_and_run_nothing(argv: list[str], msg: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", *argv]) == 2
    out, err = capsys.readouterr()
    assert msg in err
    assert "pytest" not in out  # nothing was started


def _sweep(tmp_path: Path, *argv: str) -> tuple[int, dict, str]:
    js = tmp_path / f"sweep{len(list(tmp_path.iterdir()))}.json"
    code = main(["sweep", "--workers", "1", "--populator", "populate-file", "--json", str(js), *argv])
    return code, json.loads(js.read_text()), str(js)


def test_a_clean_sweep_exits_0_and_shards_split_the_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, _ = _sweep(tmp_path, "--kernel", "bounded", "--seeds", "0..5", "--shard", "1/2")
    assert code == 0
    (row,) = doc["results"]
    assert (row["kernel"], row["seeds"], row["outcomes"]["FORBIDDEN"]) == ("bounded", 3, 0)
    assert doc["items"]["passed"] == 3 and doc["shard"] == "1/2"
    out = capsys.readouterr().out
    assert "mmlab merged results" in out and "3 items (suite x kernel x seed)" in out
    assert "sweep[bounded-seed0]" not in out  # nothing failed, so no seed is listed


def test_a_sweep_that_finds_the_race_exits_1_and_lists_every_failing_seed(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, _ = _sweep(tmp_path, "--kernel", "v3.9", "--size", "4M", "--seeds", "0..2")
    out = capsys.readouterr().out
    assert code == 1, out
    failed = doc["results"][0]["failed_seeds"]
    assert failed and len(doc["failures"]) == len(failed)
    for s in failed:
        assert f"sweep.toml::sweep[v3.9-seed{s}] (seed {s}): VIOLATED sweep on v3.9, seed {s}: v3.9: FORBIDDEN " \
            "appeared" in out
        assert f"sweep.toml --kernel v3.9 --seed {s}" in out
        assert f"--mmlab-seeds {s}..{s} --mmlab-kernels v3.9" in out
    assert "replay: mmlab race --kernel v3.9 --populator populate-file --racer munmap-mmap --round-seed" in out
