"""`mmlab race`: arguments, the JSON shape of the issue, exit status from the outcomes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmlab.cli import main


@pytest.mark.parametrize("args,words", [
    (["--kernel", "v9"], "unknown kernel"),
    (["--populator", "populate-fast"], "unknown populator"),
    (["--racer", "mmap-sideways"], "unknown racer"),
    (["--rounds", "0"], "--rounds must be positive"),
    (["--size", "3k"], "multiple of 4096"),
    (["--duration", "-1"], "--duration must be positive"),
])
def test_bad_arguments_exit_2(args: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["race", *args]) == 2
    assert words in capsys.readouterr().err


def test_forbidden_exits_1_with_replayable_history(tmp_path: Path, capsys: pytest.CaptureFixture[str], seed: int) -> None:
    out = tmp_path / "race.json"
    rc = main(["race", "--kernel", "v3.9,bounded", "--populator", "populate-file", "--racer", "mmap-fixed",
               "--rounds", "12", "--seed", str(seed), "--size", "8M", "--time-scale", "0.25", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 1, text
    assert "FORBIDDEN v3.9 populate-file mmap-fixed" in text and "--round-seed" in text
    assert "call history" in text and "W[" in text
    doc = json.loads(out.read_text())
    res = {r["kernel"]: r for r in doc["results"]}
    for r in res.values():
        assert set(r) >= {"kernel", "populator", "racer", "rounds", "window_hits", "outcomes"}
        assert set(r["outcomes"]) >= {"OK", "INTERESTING", "FORBIDDEN", "wrong_pages"}
        assert r["rounds"] == 12
    assert res["v3.9"]["outcomes"]["FORBIDDEN"] > 0 and res["v3.9"]["outcomes"]["wrong_pages"] > 0
    assert res["bounded"]["outcomes"]["FORBIDDEN"] == 0 and res["bounded"]["outcomes"]["INTERESTING"] == 0


def test_nothing_forbidden_exits_0(capsys: pytest.CaptureFixture[str], seed: int) -> None:
    rc = main(["race", "--kernel", "v3.7", "--populator", "populate-file", "--racer", "munmap-mmap,mmap-fixed",
               "--rounds", "3", "--seed", str(seed), "--size", "8M", "--time-scale", "0.25"])
    assert rc == 0, capsys.readouterr().out
