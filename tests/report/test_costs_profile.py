"""Cost profiles (mmlab/costprofile.py) and `--costs` on every command that takes costs."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from mmlab.clock import DEFAULT_COSTS
from mmlab.cli import main
from mmlab.costprofile import (BUILTIN, CALIBRATED, COST_FIELDS, CostProfileError, default_path, dumps, load,
                               resolve, save)

GOOD = """[profile]
kernel = "6.18.0-test"
date = "2026-11-30 11:00 UTC"
host = "box"

[costs]
anon_page_ns = 3200
zap_anon_page_ns = 250

[spread]
anon_page_ns = 0.05
"""

COMMANDS = [["latency"], ["race"], ["stress"], ["compare"], ["explore"], ["sweep"], ["demo"], ["tune"]]


def _write(tmp_path: Path, text: str, name: str = "costs.toml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_load_a_partial_profile_keeps_the_rest_built_in(tmp_path: Path) -> None:
    prof = load(_write(tmp_path, GOOD))
    assert prof.costs.anon_page_ns == 3200 and prof.costs.zap_anon_page_ns == 250
    assert prof.costs.file_page_ns == DEFAULT_COSTS.file_page_ns and prof.costs.time_scale == 1.0
    assert prof.scaled(0.5).anon_page_ns == 3200 and prof.scaled(0.5).cost("anon_page") == 1600
    assert prof.measured == ("anon_page_ns", "zap_anon_page_ns") and prof.spread == {"anon_page_ns": 0.05}
    h = prof.header
    assert h.startswith(f"costs: calibrated {tmp_path / 'costs.toml'}, 2026-11-30 11:00 UTC")
    assert "file_page_ns" in h and "vma_op_ns" not in h  # built-in ones named; vma_op_ns is never calibrated
    d = prof.as_dict()
    assert d["source"] == "calibrated" and d["costs"]["anon_page_ns"] == 3200 and set(d["costs"]) == set(COST_FIELDS)
    assert BUILTIN.header == "costs: built-in" and BUILTIN.as_dict()["source"] == "built-in"


def test_dumps_round_trips_through_load(tmp_path: Path) -> None:
    costs = {f: 100 + i for i, f in enumerate(CALIBRATED)}
    text = dumps(costs, kernel="k", date="d", host="h", spread={"anon_page_ns": 0.1},
                 measured={"anon_page_64M_ns_per_page": 1234.5, "repeats": 5})
    prof = load(save(tmp_path / "sub" / "p.toml", text))
    assert {f: getattr(prof.costs, f) for f in CALIBRATED} == costs and prof.kernel == "k"


@pytest.mark.parametrize("text, field", [
    ("[costs\nanon_page_ns = 1", ""),                                     # not TOML
    ("[costs]\nanon_page_ns = -1\n", "costs.anon_page_ns"),
    ("[costs]\nanon_page_ns = 1.5\n", "costs.anon_page_ns"),
    ("[costs]\nanon_page_ns = true\n", "costs.anon_page_ns"),
    ("[costs]\nanon_page_ns = \"1600\"\n", "costs.anon_page_ns"),
    ("[costs]\nreadahead_pages = 0\n", "costs.readahead_pages"),
    ("[costs]\nanon_pages_ns = 1600\n", "costs.anon_pages_ns"),              # a typo is not ignored
    ("[costs]\ntime_scale = 1\n", "costs.time_scale"),                      # a run's choice, not the machine's
    ("[profile]\nkernel = \"x\"\n", "costs"),
    ("[costs]\nanon_page_ns = 1\n[extra]\nx = 1\n", "extra"),
    ("[costs]\nanon_page_ns = 1\n[profile]\ndate = 3\n", "profile.date"),
])
def test_a_bad_profile_names_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(CostProfileError) as ei:
        load(path)
    assert str(ei.value).startswith(path) and ei.value.field == field
    if field:
        assert repr(field) in str(ei.value)


def test_resolve_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the conftest gives every test an empty config home: nothing there -> built-in
    assert default_path() == Path(os.environ["XDG_CONFIG_HOME"]) / "mmlab" / "costs.toml"
    assert resolve(None) is BUILTIN
    save(default_path(), GOOD)                       # the default location, when present
    assert resolve(None).costs.anon_page_ns == 3200
    other = _write(tmp_path, GOOD.replace("3200", "4800"), "other.toml")
    monkeypatch.setenv("MMLAB_COSTS", other)         # $MMLAB_COSTS over the default location
    assert resolve(None).costs.anon_page_ns == 4800
    assert resolve("builtin") is BUILTIN             # --costs over both
    assert resolve(str(default_path())).costs.anon_page_ns == 3200
    monkeypatch.setenv("MMLAB_COSTS", str(tmp_path / "missing.toml"))
    with pytest.raises(CostProfileError, match="MMLAB_COSTS"):
        resolve(None)
    monkeypatch.delenv("MMLAB_COSTS")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "nothing"))
    assert resolve(None) is BUILTIN


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c[0])
def test_every_command_refuses_a_bad_profile_before_running(cmd: list[str], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(tmp_path, "[costs]\nzap_anon_page_ns = -5\n")
    with pytest.raises(SystemExit) as ei:
        main([*cmd, "--costs", bad])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert bad in err and "zap_anon_page_ns" in err


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c[0])
def test_every_command_refuses_a_bad_default_profile(cmd: list[str], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    default_path().parent.mkdir(parents=True)
    default_path().write_text("[costs]\nanon_page_ns = \"fast\"\n")
    with pytest.raises(SystemExit) as ei:
        main(cmd)
    assert ei.value.code == 2 and str(default_path()) in capsys.readouterr().err


def _latency(tmp_path: Path, name: str, *extra: str) -> tuple[dict, str]:
    out = tmp_path / f"{name}.json"
    rc = main(["latency", "--kernel", "v6.18", "--populator", "populate-anon", "--sizes", "1M,2M", "--noise-ms", "50",
               "--seed", "1", "--quiet-stalls", "--json", str(out), *extra])
    assert rc == 0
    return json.loads(out.read_text()), name


def test_latency_names_its_costs_and_the_profile_moves_the_waits(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    slow = _write(tmp_path, GOOD.replace("3200", str(DEFAULT_COSTS.anon_page_ns * 8)), "slow.toml")
    base, _ = _latency(tmp_path, "base")
    assert "costs: built-in" in capsys.readouterr().out and base["costs"]["source"] == "built-in"
    cal, _ = _latency(tmp_path, "cal", "--costs", slow)
    out = capsys.readouterr().out
    assert f"costs: calibrated {slow}, 2026-11-30 11:00 UTC" in out.replace("\n", "")
    assert cal["costs"]["path"] == slow and cal["costs"]["costs"]["anon_page_ns"] == DEFAULT_COSTS.anon_page_ns * 8

    def writer(doc: dict) -> float:
        return max(r["victim"]["writer"]["max_us"] for r in doc["runs"] if r["size_bytes"] == 2 << 20)
    # 8x the per-page cost: the writer waits behind a populate hold several times as long
    assert writer(cal) > 3 * writer(base)


def test_race_scenario_token_carries_the_costs() -> None:
    from mmlab.sched.scenario import RaceScenario, scenario_from_spec
    c = dataclasses.replace(DEFAULT_COSTS, anon_page_ns=999, disk_window_ns=7)
    sc = RaceScenario("v6.18", "populate-anon", "munmap-mmap", 1 << 20, 0.5, costs=c)
    spec = json.loads(json.dumps(sc.spec()))
    assert spec["costs"] == {"anon_page_ns": 999, "disk_window_ns": 7}
    back = scenario_from_spec(spec)
    assert back.costs == c and back.build()[0].costs == c.scaled(0.5)
    assert "costs" not in RaceScenario("v6.18", "populate-anon", "munmap-mmap").spec()  # old tokens unchanged


def test_stress_suites_and_explore_scenarios_carry_the_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from mmlab.report import explore_cmd, stress_cmd
    prof = _write(tmp_path, GOOD)
    got: dict[str, object] = {}
    monkeypatch.setattr(stress_cmd, "_run", lambda suites, *a: got.setdefault("suites", suites) and 0)
    assert main(["stress", "stress/populate-race.toml", "--costs", prof]) == 0
    assert [s.costs.anon_page_ns for s in got["suites"]] == [3200]  # type: ignore[attr-defined]
    assert "costs: calibrated" in capsys.readouterr().err
    import importlib
    ex = importlib.import_module("mmlab.sched.explore")  # the module (mmlab.sched exports a function of that name)

    def fake_explore(sc: object, *a: object, **k: object) -> object:
        got["scenario"] = sc
        raise KeyboardInterrupt
    monkeypatch.setattr(ex, "explore", fake_explore)
    main(["explore", "--kernel", "v6.18", "--populator", "populate-anon", "--iterations", "1", "--costs", prof])
    sc = got["scenario"]
    assert sc.costs.anon_page_ns == 3200 and sc.spec()["costs"] == {"anon_page_ns": 3200,  # type: ignore[attr-defined]
                                                                       "zap_anon_page_ns": 250}


@pytest.mark.parametrize("cmd", [*COMMANDS, ["calibrate"]], ids=lambda c: c[0])
def test_help_names_the_costs_option(cmd: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main([*cmd, "--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert ("[--costs FILE]" in out) != (cmd == ["calibrate"]) and "MMLAB_COSTS" in out  # calibrate: --out
