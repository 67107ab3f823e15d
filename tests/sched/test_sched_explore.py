"""The issue's checks, at test size: PCT finds the v3.9 race fast, the safe profiles stay clean,
failures replay identically, the shrunk interleaving is short and still fails, a replay that no
longer fits says so."""

from __future__ import annotations

import statistics

import pytest

from mmlab import DEFAULT_COSTS
from mmlab.sched.explore import explore, replay_token
from mmlab.sched.scenario import RaceScenario
from mmlab.sched.token import TokenError, decode_token, encode_token
from mmlab.sched.trace import fingerprint, group_steps


@pytest.mark.parametrize("populator", ["populate-file", "populate-anon"])
def test_pct_finds_the_v39_race_within_200_executions(populator: str, seed: int, no_leaked_threads: None) -> None:
    sc = RaceScenario("v3.9", populator, "munmap-mmap")
    found = []
    for s in range(seed, seed + 9):
        r = explore(sc, "pct", 2000, s, do_shrink=False, reproduce=0)
        assert r.finding is not None, f"seed {s}: no FORBIDDEN in 2000 PCT executions"
        assert r.finding.outcome.verdict == "FORBIDDEN" and r.finding.outcome.what == "replacement-populated"
        found.append(r.first_failure_at)
    assert statistics.median(found) <= 200, found


@pytest.mark.parametrize("kernel", ["v3.7", "v3.9-rc1", "bounded"])
@pytest.mark.parametrize("populator", ["populate-file", "populate-anon"])
def test_nothing_forbidden_where_populate_cannot_see_a_replacement(kernel: str, populator: str, seed: int,
                                                                   no_leaked_threads: None) -> None:
    for racer, runs in (("munmap-mmap", (("pct", 100), ("random", 30))), ("mmap-fixed", (("pct", 30),))):
        sc = RaceScenario(kernel, populator, racer)
        for strategy, n in runs:
            r = explore(sc, strategy, n, seed, stop_on_failure=False, do_shrink=False, reproduce=0)
            assert r.counts.get("FORBIDDEN", 0) == 0 and r.finding is None, (racer, strategy, dict(r.counts))
            assert r.counts["OK"] > 0


def test_dfs_exhausts_the_schedules_up_to_two_preemptions(no_leaked_threads: None) -> None:
    clean = explore(RaceScenario("bounded", "populate-anon", "munmap-mmap"), "dfs", 10_000, 0,
                    max_preemptions=2, stop_on_failure=False, reproduce=0)
    assert clean.exhausted and clean.finding is None and clean.executions > 100
    racy = explore(RaceScenario("v3.9", "populate-anon", "munmap-mmap"), "dfs", 10_000, 0,
                   max_preemptions=2, stop_on_failure=False, do_shrink=False, reproduce=0)
    assert racy.exhausted and racy.counts["FORBIDDEN"] > 0
    # the first failure needs a preemption: it is found once the search allows one
    assert racy.first_failure_at is not None and racy.first_failure_at > 2


def test_flipping_vm_populate_off_brings_the_race_back(seed: int, no_leaked_threads: None) -> None:
    off = explore(RaceScenario("v3.9-rc1+vm_populate=off", "populate-file", "munmap-mmap"), "pct", 300, seed,
                  do_shrink=False, reproduce=0)
    assert off.finding is not None and off.finding.outcome.verdict == "FORBIDDEN"


@pytest.mark.parametrize("populator", ["populate-file", "populate-anon"])
def test_failure_replays_identically_and_shrinks_to_a_short_interleaving(populator: str, seed: int,
                                                                        no_leaked_threads: None) -> None:
    sc = RaceScenario("v3.9", populator, "munmap-mmap")
    r = explore(sc, "random", 500, seed, reproduce=10)
    f = r.finding
    assert f is not None and f.shrunk is not None
    assert f.reproduced == f.replays == 10, f.replay_problems
    shown = f.shrunk.execution
    assert f.shrunk.outcome.key == f.outcome.key == ("FORBIDDEN", "replacement-populated")
    assert len(group_steps(shown)) <= 12
    assert shown.preemptions <= f.execution.preemptions
    # the token is the shrunk execution, and it still fails the same way on replay
    rr = replay_token(f.token, 2)
    (e1, o1), (e2, o2) = rr.runs
    assert o1.key == o2.key == ("FORBIDDEN", "replacement-populated")
    assert fingerprint(e1) == fingerprint(e2) == fingerprint(shown)
    lat1 = [(ev[0], ev[2][1].req_ns, ev[2][1].acq_ns, ev[2][1].rel_ns) for ev in e1.events if ev[1] == "lock_released"]
    lat2 = [(ev[0], ev[2][1].req_ns, ev[2][1].acq_ns, ev[2][1].rel_ns) for ev in e2.events if ev[1] == "lock_released"]
    assert lat1 == lat2 and any(x[3] > x[2] for x in lat1)  # same virtual latencies, not all zero


def test_a_tampered_recording_diverges_at_the_first_differing_step(seed: int, no_leaked_threads: None) -> None:
    r = explore(RaceScenario("v3.9", "populate-file", "munmap-mmap"), "pct", 500, seed, reproduce=0)
    assert r.finding is not None
    d = decode_token(r.finding.token)
    # a step where both tasks could run: claim only one could
    step = next(i for i, m in enumerate(d["masks"]) if m == 3)
    d["masks"][step] = 1 << d["choices"][step]
    rr = replay_token(encode_token(d))
    assert rr.divergence is not None and rr.divergence.step == step
    assert rr.identical == 0 and rr.runs[0][1].verdict == "DIVERGED"


def test_a_changed_kernel_is_a_divergence_not_a_false_verdict(seed: int, no_leaked_threads: None) -> None:
    r = explore(RaceScenario("v3.9", "populate-file", "munmap-mmap"), "pct", 500, seed, reproduce=0)
    assert r.finding is not None
    d = decode_token(r.finding.token)
    d["scenario"]["switches"]["populate_after_unlock"] = False  # as if the code had changed
    rr = replay_token(encode_token(d))
    assert rr.divergence is not None, [o for _, o in rr.runs]
    assert any("populate_after_unlock" in n for n in rr.notes)


def test_stall_bound_is_found_where_populate_holds_the_write_lock(seed: int, no_leaked_threads: None) -> None:
    for kernel, stalls in (("v3.7", True), ("v3.9", False), ("bounded", False)):
        sc = RaceScenario(kernel, "populate-file", "mmap-fixed", stall_ns=1_000_000)
        r = explore(sc, "pct", 80, seed, do_shrink=False, reproduce=0)
        assert (r.counts.get("STALL", 0) > 0) == stalls, (kernel, dict(r.counts))
        if stalls:
            # the whole populate under the write lock: one disk window and 256 file pages, in virtual time
            c = DEFAULT_COSTS
            assert r.finding is not None
            assert f"waited {(c.disk_window_ns + 256 * c.file_page_ns) / 1e6:.3f} ms" in r.finding.outcome.detail


def test_token_round_trip_and_damage() -> None:
    d = {"scenario": {"kind": "race"}, "strategy": "pct", "choices": [0, 1, 1, 0, 40], "masks": [3, 3, 2, 1, 99]}
    tok = encode_token(d)
    back = decode_token(tok)
    assert back["choices"] == d["choices"] and back["masks"] == d["masks"] and back["mmlab"]
    with pytest.raises(TokenError):
        decode_token(tok[:-10])
    with pytest.raises(TokenError):
        decode_token("hello")


# bounded's yield policies (mmlab/mm/gup.py). Each yields within the 4 MiB populate (1,024 pages,
# 1.6 ms of virtual work): with the identity check off the race comes back, which shows
# the schedules reach a yield; with it on (as shipped) nothing is FORBIDDEN.
_POLICIES = ["bounded+populate_batch_pages=64",
             "bounded+populate_batch_pages=64+populate_yield_after_us=500",
             "bounded+populate_batch_pages=64+populate_yield_after_us=100",
             "bounded+populate_batch_pages=64+populate_batch_max_pages=256",
             "bounded+populate_batch_pages=64+populate_yield_after_us=200+populate_batch_max_pages=256",
             "bounded+populate_batch_pages=64+populate_vma_lock",  # under the per-VMA lock
             "bounded+populate_vma_lock",
             "bounded"]  # the shipped policy: a yield at every 512-page boundary


@pytest.mark.parametrize("policy", _POLICIES)
def test_every_yield_policy_keeps_the_oracle_at_zero_forbidden(policy: str, seed: int,
                                                               no_leaked_threads: None) -> None:
    for populator in ("populate-anon", "populate-file"):
        for racer in ("munmap-mmap", "mmap-fixed"):
            safe = explore(RaceScenario(policy, populator, racer, size=4 << 20), "pct", 100, seed,
                           stop_on_failure=False, do_shrink=False, reproduce=0)
            assert safe.counts.get("FORBIDDEN", 0) == 0 and safe.counts["OK"] > 0, (populator, racer, dict(safe.counts))
        unsafe = explore(RaceScenario(policy + "+populate_checks_identity=off", populator, "munmap-mmap",
                                      size=4 << 20), "pct", 300, seed, stop_on_failure=False, do_shrink=False,
                         reproduce=0)
        assert unsafe.counts.get("FORBIDDEN", 0) > 0, (populator, dict(unsafe.counts))
