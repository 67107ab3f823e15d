"""`mmlab explore` and `mmlab replay` from the command line: output, tokens, exit codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mmlab.cli import main


def _token(out: str) -> str:
    m = re.search(r"replay token: (mmlab1\.\S+)", out)
    assert m, out
    return m.group(1)


def test_explore_finds_prints_and_replays_the_race(capsys: pytest.CaptureFixture[str], seed: int,
                                                   no_leaked_threads: None) -> None:
    rc = main(["explore", "--kernel", "v3.9", "--populator", "populate-anon", "--seed", str(seed),
               "--iterations", "2000", "--reproduce", "3"])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert f"PCT depth 2, seed {seed}" in out
    assert "FORBIDDEN (replacement-populated)" in out
    assert re.search(r"PCT: n=2 tasks, k=\d+ decision steps, depth d=2: .* = 0\.0\d+", out), out
    steps = re.findall(r"^\s+(\d+)\. (populator|racer) +\[(mmap_sem [RW/]+|no lock)\]", out, re.M)
    assert 3 <= len(steps) <= 12 and [int(s[0]) for s in steps] == list(range(1, len(steps) + 1))
    assert "reproduced 3/3 (same outcome, same trace, same virtual-time latencies)" in out
    tok = _token(out)
    assert f"replay with:  mmlab replay {tok}" in out

    rc = main(["replay", tok, "--times", "2", "--trace"])
    out2 = capsys.readouterr().out
    assert rc == 1, out2
    assert "outcome: FORBIDDEN (replacement-populated); recorded: FORBIDDEN" in out2
    assert "reproduced 2/2" in out2 and "every schedule point:" in out2
    assert re.search(r"^\s+1\. t=\s+0 ns  populator", out2, re.M)


def test_explore_clean_profile_states_the_miss_probability(capsys: pytest.CaptureFixture[str],
                                                           no_leaked_threads: None, tmp_path: Path) -> None:
    js = tmp_path / "r.json"
    rc = main(["explore", "--kernel", "v3.7", "--populator", "populate-file", "--iterations", "60",
               "--seed", "1", "--json", str(js)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "no failure in 60 executions: OK 60" in out
    assert re.search(r"60 clean executions miss one with probability <= [0-9.e-]+", out)
    assert "points/s" in out
    d = json.loads(js.read_text())
    r = d["results"][0]
    assert r["counts"] == {"OK": 60} and r["pct"]["n"] == 2 and r["schedule_points"] > 60


def test_bad_arguments_exit_2_and_run_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["explore", "--kernel", "v9.9"], ["explore", "--populator", "nope"],
                 ["explore", "--racer", "nope"], ["explore", "--iterations", "0"],
                 ["explore", "--size", "3"], ["explore", "--strategy", "magic"],
                 ["replay", "not-a-token"], ["replay", "mmlab1.AAAA"]):
        with pytest.raises(SystemExit) as e:
            raise SystemExit(main(argv))
        assert e.value.code == 2, argv
        err = capsys.readouterr().err
        assert "error" in err, (argv, err)


def test_replay_of_a_token_that_no_longer_fits_exits_2(capsys: pytest.CaptureFixture[str],
                                                       no_leaked_threads: None) -> None:
    from mmlab.sched.token import decode_token, encode_token
    rc = main(["explore", "--kernel", "v3.9", "--seed", "2", "--reproduce", "0", "--no-shrink"])
    tok = _token(capsys.readouterr().out)
    assert rc == 1
    d = decode_token(tok)
    step = next(i for i, m in enumerate(d["masks"]) if m == 3)  # both tasks could run here...
    d["masks"][step] = 1 << d["choices"][step]  # ...the tampered recording says only one could
    rc = main(["replay", encode_token(d)])
    out = capsys.readouterr().out
    assert rc == 2 and "replay diverged at step" in out and "no result is reported" in out


SUITE = """
[suite]
name = "tiny-race"
kernels = ["v3.9", "bounded"]
seed = 3
time_scale = 1.0

[[race]]
populators = ["populate-file"]
racers = ["munmap-mmap", "mprotect"]
size = "1M"
rounds = 1

[race.expect.default]
never = ["FORBIDDEN"]

[race.expect."v3.9"]
reproduce = ["replacement-populated"]
"""


def test_explore_a_suite_checks_its_expectations(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 no_leaked_threads: None) -> None:
    good = tmp_path / "tiny.toml"
    good.write_text(SUITE)
    rc = main(["explore", str(good), "--iterations", "40", "--seed", "1", "--reproduce", "2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    # the known bug shows up (in the replacing racer's scenario) and is printed like a finding
    assert "expected: replacement-populated reproduced at execution" in out
    assert "reproduced 2/2" in out
    assert re.search(r"bounded / populate-file / munmap-mmap: no failure in 40 executions", out)
    assert "EXPECTATION NOT MET" not in out

    # the same suite asking v3.7 for the bug: it is not there, and the command says so
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(SUITE.replace('"v3.9"', '"v3.7"'))
    rc = main(["explore", str(wrong), "--iterations", "30", "--seed", "1", "--kernel", "v3.7"])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "EXPECTATION NOT MET: tiny-race: v3.7: replacement-populated not reproduced in any of its 2" in out


def test_explore_a_bad_suite_exits_2_naming_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(SUITE.replace('racers = ["munmap-mmap", "mprotect"]', 'racers = ["munmap-mmap", "nope"]'))
    assert main(["explore", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:" in err and "nope" in err
