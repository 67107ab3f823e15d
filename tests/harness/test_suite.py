"""Suite files: the shipped ones load, bad ones are refused with file and line, nothing runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmlab.cli import main
from mmlab.harness.suite import SuiteError, load_suite, parse_duration

STRESS = Path(__file__).resolve().parents[2] / "stress"

GOOD = '''\
[suite]
name = "tiny"
kernels = ["v3.9", "bounded"]
seed = 3
time_scale = 0.25

[[race]]
populators = ["populate-file"]
racers = ["mmap-fixed"]
size = "8M"
rounds = 2
'''


def _write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shipped_suites_load() -> None:
    files = sorted(STRESS.glob("*.toml"))
    assert {f.stem for f in files} >= {"lutomirski", "populate-race", "mlockall-mixed", "remap-file-pages"}
    for f in files:
        s = load_suite(f)
        assert s.kernels and (s.races or s.tasks)


def test_good_suite_parses(tmp_path: Path) -> None:
    s = load_suite(_write(tmp_path, GOOD))
    assert s.name == "tiny" and s.kernels == ("v3.9", "bounded")
    assert s.races[0].size == 8 << 20 and s.races[0].rounds == 2


@pytest.mark.parametrize("change,line,words", [
    (('seed = 3', 'seed = 3\ncolour = "red"'), 5, "unknown field 'colour'"),
    (('seed = 3', 'seed = "three"'), 4, "seed must be a whole number"),
    (('size = "8M"', 'size = "8 parsecs"'), 10, "not a size"),
    (('size = "8M"', 'size = 4097'), 10, "multiple of 4096"),
    (('"bounded"]', '"v9.99"]'), 3, "unknown kernel 'v9.99'"),
    (('["populate-file"]', '["populate-fast"]'), 8, "unknown populator 'populate-fast'"),
    (('["mmap-fixed"]', '["mmap-sideways"]'), 9, "unknown racer 'mmap-sideways'"),
    (('rounds = 2', 'rounds = 2\n[race.expect."v3.9"]\nnever = ["WRONG"]'), 13, "unknown never 'WRONG'"),
    (('rounds = 2', 'rounds = 2\n[race.expect."v6.18"]\nnever = ["FORBIDDEN"]'), 12, "does not run"),
    (('rounds = 2', ''), 7, "needs rounds or duration"),
    (('name = "tiny"', 'name = "tiny'), 2, "not valid TOML"),
])
def test_bad_suite_names_file_line_and_problem(tmp_path: Path, change: tuple[str, str], line: int, words: str) -> None:
    p = _write(tmp_path, GOOD.replace(*change, 1))
    with pytest.raises(SuiteError) as e:
        load_suite(p)
    assert e.value.line == line, str(e.value)
    assert words in str(e.value)
    assert str(e.value).startswith(f"{p}:{line}:")


def test_bad_task_fields(tmp_path: Path) -> None:
    text = GOOD + '\n[[task]]\nname = "t"\nmix = { mmap = 1, fly = 2 }\n'
    with pytest.raises(SuiteError, match="unknown op 'fly'"):
        load_suite(_write(tmp_path, text))
    text = GOOD + '\n[[task]]\nname = "t"\npopulator = "mlockall"\n'
    with pytest.raises(SuiteError, match="cannot be a workload task"):
        load_suite(_write(tmp_path, text))
    text = GOOD.replace("time_scale = 0.25", 'time_scale = 0.25\nduration = "1s"') + '\n[[task]]\nname = "t"\nvictim = "fault"\n' \
        + '[expect.bounded]\nstall_ms = -1\n'
    with pytest.raises(SuiteError, match="stall_ms must be positive"):
        load_suite(_write(tmp_path, text))


def test_durations() -> None:
    assert parse_duration("250ms") == pytest.approx(0.25)
    assert parse_duration("500us") == pytest.approx(5e-4)
    assert parse_duration(3) == 3.0
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_cli_bad_suite_exits_2_and_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, GOOD, "a.toml")
    bad = _write(tmp_path, GOOD.replace("seed = 3", "seed = 3\nbogus = 1"), "b.toml")
    assert main(["stress", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:5: unknown field 'bogus'" in err
    assert main(["stress", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_cli_runs_a_tiny_suite_and_checks_expectations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same race under two expectations: reproduced (exit 0) and forbidden (exit 1)."""
    held = GOOD.replace("rounds = 2", 'rounds = 12\n[race.expect."v3.9"]\nreproduce = ["replacement-populated"]\n'
                        '[race.expect.bounded]\nnever = ["FORBIDDEN", "INTERESTING"]')
    out = tmp_path / "r.json"
    assert main(["stress", str(_write(tmp_path, held, "held.toml")), "--json", str(out)]) == 0, capsys.readouterr().out
    import json
    doc = json.loads(out.read_text())
    assert doc["suites"][0]["status"] == "HELD"
    violated = GOOD.replace("rounds = 2", 'rounds = 12\n[race.expect."v3.9"]\nnever = ["FORBIDDEN"]')
    assert main(["stress", str(_write(tmp_path, violated, "violated.toml"))]) == 1
    text = capsys.readouterr().out
    assert "v3.9: FORBIDDEN appeared" in text and "replay: mmlab race" in text


def test_cli_hang_exits_3_with_stacks_and_lock_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from mmlab.harness import race, stress

    def hung(*a: object, **k: object) -> None:
        raise race.RoundHang("round hung: populator still running after 60 s", "--- thread populator\n  frame\n",
                             {"lock": "mmap_sem", "holders": [{"task": "populator", "mode": "R"}], "waiters": []})
    monkeypatch.setattr(stress, "run_cell", hung)
    assert main(["stress", str(_write(tmp_path, GOOD))]) == 3
    err = capsys.readouterr().err
    assert "round hung" in err and "--- thread populator" in err and "holders" in err


def test_cli_interrupt_exits_130_with_what_was_measured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from mmlab.harness import stress
    real = stress.run_cell
    calls = []

    def once_then_interrupt(*a: object, **k: object):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(stress, "run_cell", once_then_interrupt)
    assert main(["stress", str(_write(tmp_path, GOOD))]) == 130
    out = capsys.readouterr().out
    assert "v3.9" in out and "interrupted" in out  # the first kernel's cell is in the summary


WORKLOAD = '''\
[suite]
name = "tinywork"
kernels = ["v6.18", "bounded"]
seed = 5
time_scale = 0.25
duration = "300ms"

[[task]]
name = "populator"
populator = "populate-anon"
size = "16M"

[[task]]
name = "writer"
victim = "writer"
interval = "250us"

[expect.default]
never = ["FORBIDDEN"]
'''


def test_workload_reports_the_populates_slowdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each kernel's workload carries the populate's median call, the same populate alone, and
    their ratio; the report says it in words."""
    out = tmp_path / "w.json"
    assert main(["stress", str(_write(tmp_path, WORKLOAD)), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    import json
    runs = json.loads(out.read_text())["suites"][0]["kernels"]
    assert [r["kernel"] for r in runs] == ["v6.18", "bounded"]
    for r in runs:
        wl = r["workload"]
        assert wl["populate_ms"] > 0 and wl["alone_ms"] > 0
        assert wl["slowdown"] == pytest.approx(wl["populate_ms"] / wl["alone_ms"])
    assert "slower than alone" in text and "undilated" in text


def test_a_dilated_workload_reports_modelled_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--dilation K: the workload's clock runs K times slower, its times stay modelled: the 16 MiB
    populate alone reads about its modelled cost (4,096 pages x anon_page_ns x 0.25) at K=1 and at
    K=8 alike, and the JSON and the report name K."""
    import json
    from mmlab.clock import DEFAULT_COSTS
    cost_ms = 4096 * DEFAULT_COSTS.anon_page_ns * 0.25 / 1e6
    path = str(_write(tmp_path, WORKLOAD))
    calls = {}
    for k in ("off", "8"):
        out = tmp_path / f"w{k}.json"
        assert main(["stress", path, "--kernel", "v6.18", "--dilation", k, "--json", str(out)]) == 0
        text = capsys.readouterr().out
        wl = json.loads(out.read_text())["suites"][0]["kernels"][0]["workload"]
        assert wl["dilation"] == (1.0 if k == "off" else 8.0)
        assert 0.8 * cost_ms < wl["alone_ms"] < 2.0 * cost_ms, (k, wl["alone_ms"], cost_ms)
        assert f"dilated k={wl['dilation']:g}" in text
        calls[k] = wl["calls"]
    # the same 300 ms of real time hold 1/8 of the modelled time: far fewer calls fit in it
    assert calls["8"] < calls["off"] / 2, calls
    assert main(["stress", path, "--dilation", "0.5"]) == 2
