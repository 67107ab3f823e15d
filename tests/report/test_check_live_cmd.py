"""`mmlab race --check-live` and `mmlab stress --check-live`: arguments, JSON, exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmlab.cli import main


@pytest.mark.parametrize("cmd", [["race"], ["stress", "stress/populate-race.toml"]])
@pytest.mark.parametrize("ms", ["0", "-1", "nan"])
def test_bad_period_exits_2(cmd: list[str], ms: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*cmd, "--check-live", "--check-live-ms", ms]) == 2
    assert "--check-live-ms" in capsys.readouterr().err


def test_race_json_carries_the_live_findings(tmp_path: Path, capsys: pytest.CaptureFixture[str], seed: int) -> None:
    out = tmp_path / "race.json"
    rc = main(["race", "--kernel", "v6.18,v3.7", "--populator", "populate-file", "--racer", "munmap-mmap",
               "--rounds", "10", "--seed", str(seed), "--size", "16M", "--time-scale", "0.5", "--check-live",
               "--check-live-ms", "0.5", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 1, text
    assert "live oracle every 0.5 ms" in text and "live checks" in text
    doc = json.loads(out.read_text())
    assert doc["check_live_ms"] == 0.5
    res = {r["kernel"]: r for r in doc["results"]}
    for r in res.values():
        live = r["live"]
        assert set(live) >= {"period_ms", "checks", "forbidden_rounds", "live_only_rounds", "hold_ms_max"}
        assert live["checks"] >= r["rounds"]
    assert res["v3.7"]["live"]["forbidden_rounds"] == 0 and res["v3.7"]["outcomes"]["FORBIDDEN"] == 0
    v618 = res["v6.18"]
    assert v618["live"]["forbidden_rounds"] >= 1, v618
    assert v618["live"]["first_seen_ms_min"] is not None
    for fr in v618["forbidden_rounds"]:  # FORBIDDEN from the final state, or seen live (with its pages)
        assert fr["final_outcome"] in ("OK", "INTERESTING", "FORBIDDEN") and fr["live"]["checks"] >= 1
        first = fr["live"]["first_forbidden"]
        assert fr["final_outcome"] == "FORBIDDEN" or (first is not None and first["wrong_pages"] > 0), fr
    assert "--check-live --check-live-ms 0.5" in text  # the replay line keeps the live checks


def test_race_without_check_live_has_no_live_section(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     seed: int) -> None:
    out = tmp_path / "race.json"
    rc = main(["race", "--kernel", "v3.7", "--populator", "populate-anon", "--racer", "mprotect",
               "--rounds", "2", "--seed", str(seed), "--size", "2M", "--time-scale", "0.25", "--json", str(out)])
    assert rc == 0, capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["check_live_ms"] is None and doc["results"][0]["live"] is None


_SUITE = """
[suite]
name = "transient"
description = "a replacement populated and unmapped again: only the live oracle can see it"
kernels = ["v6.18", "bounded"]
seed = {seed}
time_scale = 0.5

[[race]]
populators = ["populate-file"]
racers = ["mmap-fixed-unmap"]
size = "16M"
rounds = 16

[race.expect.default]
never = ["FORBIDDEN"]

[race.expect."v6.18"]
reproduce = ["live:replacement-populated"]
"""


def test_stress_check_live_decides_a_suite(tmp_path: Path, capsys: pytest.CaptureFixture[str], seed: int) -> None:
    """The same suite: without --check-live the transient replacement is never seen (the known
    bug is not reproduced: exit 1); with it, v6.18 reproduces it and bounded stays clean (exit 0)."""
    suite = tmp_path / "transient.toml"
    suite.write_text(_SUITE.format(seed=seed))
    out = tmp_path / "stress.json"
    assert main(["stress", str(suite), "--json", str(out)]) == 1
    assert "known bug not reproduced" in capsys.readouterr().out
    assert main(["stress", str(suite), "--check-live", "--check-live-ms", "0.5", "--json", str(out)]) == 0, \
        capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["check_live_ms"] == 0.5
    races = {k["kernel"]: k["race"][0] for k in doc["suites"][0]["kernels"]}
    assert races["v6.18"]["live"]["live_only_rounds"] >= 1
    assert races["bounded"]["live"]["forbidden_rounds"] == 0 and races["bounded"]["live"]["checks"] > 0
