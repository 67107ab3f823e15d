"""`mmlab calibrate` on this machine's kernel: small sizes, a tmp profile, nothing left behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mmlab.cli import main
from mmlab.costprofile import CALIBRATED, default_path, load, resolve
from mmlab.flags import PAGE_SIZE
from mmlab.real.calibrate import calibrate, readahead_kb
from mmlab.real.procfs import read_maps

REGIONS = (0x1000_0000_0000, 0x4000_0000_0000)  # where mmlab.real.backend reserves its regions


def test_calibrate_measures_every_cost(tmp_path: Path, can_mlock: None) -> None:
    before = read_maps(*REGIONS)
    cal = calibrate(sizes=(4 << 20, 8 << 20), repeats=2, file_size=8 << 20, file_dir=str(tmp_path))
    assert set(cal.costs) == set(CALIBRATED), cal.notes
    for f in ("anon_page_ns", "file_page_ns", "zap_anon_page_ns", "zap_locked_page_ns"):
        assert 10 <= cal.costs[f] <= 1_000_000, (f, cal.costs[f])  # a page costs ns to us, not 0 and not ms
    assert cal.costs["readahead_pages"] == readahead_kb(str(tmp_path)) * 1024 // PAGE_SIZE
    assert cal.costs["disk_window_ns"] > 0
    assert all(s >= 0 for s in cal.spread.values()) and set(cal.spread) <= set(cal.costs)
    assert cal.samples["anon_page"].by_size().keys() == {4 << 20, 8 << 20}
    assert len(cal.samples["anon_page"].per_size[4 << 20]) == 2  # the warm-up is not kept
    assert read_maps(*REGIONS) == before  # everything mapped is unmapped again
    assert os.listdir(tmp_path) == []  # and the file removed


def test_calibrate_command_writes_a_profile_every_command_reads(tmp_path: Path, can_mlock: None,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out, js = tmp_path / "p.toml", tmp_path / "p.json"
    rc = main(["calibrate", "--sizes", "4M,8M", "--file-size", "8M", "--repeats", "2", "--out", str(out),
               "--json", str(js)])
    assert rc == 0, capsys.readouterr()
    prof = load(out)
    assert prof.kernel == os.uname().release and set(prof.measured) == set(CALIBRATED)
    doc = json.loads(js.read_text())
    assert doc["costs"]["anon_page_ns"] == prof.costs.anon_page_ns and doc["out"] == str(out)
    assert "anon_page_ns" in capsys.readouterr().out
    assert not default_path().exists()  # --out: the default location is not touched


def test_calibrate_writes_the_default_location_of_this_test_only(can_mlock: None) -> None:
    # the conftest points XDG_CONFIG_HOME at a tmp dir: this is never the user's ~/.config
    assert main(["calibrate", "--sizes", "4M,8M", "--no-file", "--repeats", "1"]) == 0
    assert resolve(None).path == str(default_path())
    assert "file_page_ns" in resolve(None).header  # not measured: named as built-in


def test_calibrate_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "--sizes", "4Q", "--out", str(tmp_path / "x")]) == 2
    assert main(["calibrate", "--repeats", "0", "--out", str(tmp_path / "x")]) == 2
    assert main(["calibrate", "--sizes", "4000G", "--out", str(tmp_path / "x")]) == 2  # MemAvailable
    assert "MemAvailable" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cpu_time_is_kept_by_default_and_wall_time_on_request(can_mlock: None) -> None:
    cpu = calibrate(sizes=(4 << 20, 8 << 20), repeats=2, files=False, locked=False)
    wall = calibrate(sizes=(4 << 20, 8 << 20), repeats=2, files=False, locked=False, clock="wall")
    for cal, name in ((cpu, "anon_page_cpu"), (wall, "anon_page")):
        assert cal.costs["anon_page_ns"] == round(cal.samples[name].median)
    for cal in (cpu, wall):  # a thread's CPU time cannot exceed the wall time of the same call
        for size, ws in cal.samples["anon_page"].per_size.items():
            assert all(c <= w * 1.01 for c, w in zip(cal.samples["anon_page_cpu"].per_size[size], ws))
    with pytest.raises(ValueError, match="clock"):
        calibrate(sizes=(4 << 20,), repeats=1, files=False, locked=False, clock="tsc")


def test_check_runs_both_sides_at_each_size(tmp_path: Path, can_mlock: None,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    js = tmp_path / "c.json"
    rc = main(["calibrate", "--sizes", "4M,8M", "--no-file", "--repeats", "1", "--dry-run", "--check",
               "--check-rounds", "1", "--json", str(js)])
    assert rc in (0, 1)  # 1: a size off by more than 15% (a verdict on this machine's load, not on the code)
    chk = json.loads(js.read_text())["check"]
    assert [r["size_bytes"] for r in chk["rows"]] == [4 << 20, 8 << 20] and chk["tolerance"] == 0.15
    for r in chk["rows"]:
        assert r["real_populate_ms"] > 0 and r["model_populate_ms"] > 0
        assert r["within"] == (r["diff"] is not None and abs(r["diff"]) <= 0.15)  # not observed: not within
    assert rc == (0 if all(r["within"] for r in chk["rows"]) else 1)
    assert "real kernel vs v6.18" in capsys.readouterr().out
