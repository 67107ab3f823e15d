"""The pytest plugin, run by pytest itself (pytester): per-seed items, failures that carry the
seed and the replay command, hangs that fail instead of killing the worker, merged results
across xdist workers, and stress suite files collected as items."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import mmlab
from mmlab.harness.histograms import decode

pytest_plugins = ["pytester"]

ROOT = str(Path(mmlab.__file__).resolve().parents[1])
# by name: a no-op where mmlab is installed (the entry point is named as the module)
PLUGIN = ["-p", "mmlab.pytest_plugin"]
# the hypothesis plugin costs seconds per inner session on a loaded machine, and nothing here uses it
COMMON = [*PLUGIN, "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-o", "addopts="]

RACE_TEST = """
import pytest

@pytest.mark.mmlab_kernels({kernel!r})
@pytest.mark.mmlab_stress(rounds=4, size="4M", time_scale=0.1)
def test_file_populate_race(mmlab_stress):
    mmlab_stress.race("populate-file", "munmap-mmap")
"""

SUITE = """
[suite]
name = "race"
kernels = ["v3.9", "bounded"]
seed = 7
time_scale = 0.1

[[race]]
populators = ["populate-file"]
racers = ["munmap-mmap"]
size = "1M"
rounds = 2

[race.expect.bounded]
never = ["FORBIDDEN", "INTERESTING"]
"""


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """xdist workers and subprocesses start in pytester's directory: give them mmlab."""
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_seeded_tests_become_one_item_per_kernel_and_seed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.mmlab_seeds(3)
        def test_seeded(mmlab_seed):
            pass

        @pytest.mark.mmlab_all_kernels
        def test_every_profile(mmlab_mm):
            pass

        @pytest.mark.mmlab_kernels("v3.9", "bounded")
        def test_two(mmlab_kernel, mmlab_seed):
            pass
    """)
    r = pytester.runpytest(*COMMON, "--collect-only", "-q")
    ids = [line.split("::")[1] for line in r.outlines if "::" in line]
    assert ids[:3] == ["test_seeded[seed0]", "test_seeded[seed1]", "test_seeded[seed2]"]
    assert {i for i in ids if i.startswith("test_every")} == {f"test_every_profile[{k}]" for k in mmlab.KERNELS}
    assert "test_two[v3.9-seed0]" in ids and "test_two[bounded-seed0]" in ids
    # the options override the marker's seeds, restrict the kernels, and shard the seeds
    r = pytester.runpytest(*COMMON, "--collect-only", "-q", "--mmlab-seeds", "10..15", "--mmlab-kernels", "v3.9",
                           "--mmlab-shard", "2/3")
    ids = [line.split("::")[1] for line in r.outlines if "::" in line]
    assert "test_seeded[seed11]" in ids and "test_seeded[seed14]" in ids and "test_seeded[seed10]" not in ids
    assert "test_two[v3.9-seed11]" in ids and not any("bounded" in i for i in ids)
    assert [i for i in ids if i.startswith("test_every")] == ["test_every_profile[v3.9]"]
    r = pytester.runpytest(*COMMON, "--collect-only", "--mmlab-seeds", "9..1")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*--mmlab-seeds: empty seed range*"])


def test_v39_file_populate_race_fails_with_seed_and_replay_command(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(RACE_TEST.format(kernel="v3.9"))
    r = pytester.runpytest(*COMMON, "--mmlab-seeds", "0..2", "--junitxml=junit.xml")
    outcomes = r.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1, r.stdout.str()
    out = r.stdout.str()
    failed = [line.split()[1] for line in r.outlines if line.startswith("FAILED test_")]
    for nodeid in failed:
        seed = nodeid.rsplit("seed", 1)[1].rstrip("]")
        # the failure message carries the seed, the token line and the command that replays it
        assert f"seed: {seed}, kernel v3.9" in out
        assert f"'{nodeid}' --mmlab-seeds {seed}..{seed} --mmlab-kernels v3.9" in out
    assert "token: " in out
    assert "replacement populated" in out
    assert "replay: mmlab race --kernel v3.9 --populator populate-file --racer munmap-mmap --round-seed" in out
    # the merged summary lists the failing seeds too, and JUnit XML carries the seed property
    assert "mmlab merged results" in out
    junit = (pytester.path / "junit.xml").read_text()
    assert 'name="mmlab_seed"' in junit and "--mmlab-seeds" in junit


def test_the_same_race_against_bounded_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(RACE_TEST.format(kernel="bounded"))
    r = pytester.runpytest(*COMMON, "--mmlab-seeds", "0..2", "--mmlab-json", "out.json")
    r.assert_outcomes(passed=3)
    doc = json.loads((pytester.path / "out.json").read_text())
    (row,) = doc["results"]
    assert (row["kernel"], row["rounds"], row["outcomes"]["FORBIDDEN"]) == ("bounded", 12, 0)
    assert row["window_hits"] > 0, "the racer never ran inside the populate window: the test tested nothing"


DEADLOCK = """
import pytest

@pytest.mark.mmlab_hang(4)
def test_deadlock(mmlab_mm, mmlab_threads):
    sem = mmlab_mm.mmap_sem

    def locker():
        sem.down_write()
        sem.down_write()  # a task that takes mmap_sem twice never gets it

    mmlab_threads.start("locker", locker)
    mmlab_threads.join()

def test_after(mmlab_mm):
    assert mmlab_mm.maps()
"""


def test_a_deadlock_fails_with_stacks_and_lock_state_and_the_session_goes_on(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(DEADLOCK)
    # under xdist with pytest-timeout's thread method, whose timeout would kill the worker
    r = pytester.runpytest_subprocess(*COMMON, "-n", "1", "--timeout", "30", "-o", "timeout_method=thread")
    out = r.stdout.str()
    r.assert_outcomes(failed=1, passed=1)
    assert "worker 'gw0' crashed" not in out and "Timeout" not in out
    assert "HANG: task locker waited" in out and "(the hang limit is 3 s)" in out
    assert "held W by locker" in out and "waited W by locker" in out  # the lock state
    assert "--- thread locker" in out and "in locker" in out  # the stuck thread's stack
    assert "seed: (not seeded), kernel v6.18" in out


def _suite_dir(pytester: pytest.Pytester, text: str = SUITE, name: str = "race.toml") -> Path:
    d = pytester.path / "stress"
    d.mkdir(exist_ok=True)
    (d / name).write_text(text)
    return d


def test_stress_suites_run_per_seed_across_workers_and_merge_exactly(pytester: pytest.Pytester) -> None:
    _suite_dir(pytester)
    r = pytester.runpytest(*COMMON, "stress", "-n", "2", "--mmlab-seeds", "6", "--mmlab-json", "merged.json")
    r.assert_outcomes(passed=12)
    r.stdout.fnmatch_lines(["*mmlab merged results*", "*race*bounded*populate-file*munmap-mmap*6*12*",
                            "*merged from workers gw0, gw1*"])
    doc = json.loads((pytester.path / "merged.json").read_text())
    assert doc["seeds"] == "0..5" and set(doc["workers"]) == {"gw0", "gw1"}
    # per suite, as mmlab stress --json reports it
    (suite,) = doc["suites"]
    assert (suite["suite"], suite["status"], suite["seeds"]) == ("race", "HELD", 6)
    assert [k["kernel"] for k in suite["kernels"]] == ["bounded", "v3.9"]
    for row in doc["results"]:
        parts = [p for w in doc["workers"].values() for p in w["results"]
                 if (p["suite"], p["kernel"]) == (row["suite"], row["kernel"])]
        assert row["seeds"] == sum(p["seeds"] for p in parts) == 6
        assert row["rounds"] == sum(p["rounds"] for p in parts) == 12
        for g in ("OK", "INTERESTING", "FORBIDDEN"):
            assert row["outcomes"][g] == sum(p["outcomes"][g] for p in parts)
        for name, h in row["histograms"].items():
            merged, ws = decode(h["blob"]), [decode(p["histograms"][name]["blob"]) for p in parts]
            assert merged.get_total_count() == sum(w.get_total_count() for w in ws) > 0
            assert all(merged.get_count_at_index(i) == sum(w.get_count_at_index(i) for w in ws)
                       for i in range(merged.counts_len))
    assert doc["totals"]["rounds"] == 24 and doc["items"]["passed"] == 12


def test_a_suite_seed_that_breaks_an_expectation_fails_with_the_stress_replay(pytester: pytest.Pytester) -> None:
    # bounded cannot populate a replacement (the identity check): a suite claiming it does is wrong
    _suite_dir(pytester, SUITE.replace('kernels = ["v3.9", "bounded"]', 'kernels = ["bounded"]')
               .replace('never = ["FORBIDDEN", "INTERESTING"]', 'reproduce = ["replacement-populated"]'))
    r = pytester.runpytest(*COMMON, "stress", "--mmlab-seeds", "3..4")
    r.assert_outcomes(failed=2)
    out = r.stdout.str()
    for seed in (3, 4):
        assert f"VIOLATED race on bounded, seed {seed}: bounded: known bug not reproduced" in out
        assert f"replay: mmlab stress {pytester.path / 'stress' / 'race.toml'} --kernel bounded --seed {seed}" in out
        assert f"'stress/race.toml::race[bounded-seed{seed}]' --mmlab-seeds {seed}..{seed}" in out


def test_a_bad_suite_file_is_a_collection_error_that_names_the_field(pytester: pytest.Pytester) -> None:
    _suite_dir(pytester, SUITE.replace('size = "1M"', 'size = "lots"'))
    r = pytester.runpytest(*COMMON, "stress")
    assert r.ret == pytest.ExitCode.INTERRUPTED  # collection errors stop the session before any test runs
    r.stdout.fnmatch_lines(["*race.toml:11: size: not a size: 'lots'*"])
    _suite_dir(pytester, SUITE.replace("rounds = 2", "rounds = 2\nrepeat = 3"))
    r = pytester.runpytest(*COMMON, "stress")
    r.stdout.fnmatch_lines(["*race.toml:13: unknown field 'repeat' in [[]race.0[]]*"])


EXPLORE_TEST = """
import pytest

@pytest.mark.mmlab_kernels("v3.9", "bounded")
@pytest.mark.mmlab_explore(iterations=100)
def test_file_populate_race_explored(mmlab_explore):
    mmlab_explore.race("populate-file", "munmap-mmap")
"""


def test_under_exploration_v39_fails_with_a_replay_token_and_bounded_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(EXPLORE_TEST)
    r = pytester.runpytest(*COMMON, "--mmlab-seeds", "0..1")
    r.assert_outcomes(failed=2, passed=2)  # PCT finds the v3.9 race for every seed; bounded has none to find
    out = r.stdout.str()
    assert "FORBIDDEN (replacement-populated) in v3.9 populate-file vs munmap-mmap, seed 0" in out
    tokens = [line.split("token: ", 1)[1] for line in r.outlines if line.startswith("token: mmlab1.")]
    assert len(tokens) == 2
    assert f"replay: mmlab replay {tokens[0]}" in out
    assert "reproduced 3/3" in out
    from mmlab.sched.explore import replay_token
    rr = replay_token(tokens[0], times=1)  # the token names the failing execution exactly
    assert rr.identical == 1 and rr.runs[0][1].verdict == "FORBIDDEN"
