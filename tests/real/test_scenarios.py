"""The real-kernel scenarios on tiny sizes: result shapes of `mmlab latency`/`mmlab race`, and
nothing left mapped or locked afterwards."""

from __future__ import annotations

from mmlab.cli import main
from mmlab.real import scenarios as S
from mmlab.real.procfs import read_maps, read_vm_lck_kb


def test_latency_cell_shape_and_cleanup(can_mlock: None) -> None:
    lck = read_vm_lck_kb()
    t = S.RealTarget()
    try:
        r = S.run_latency_cell(t, S.POPULATORS["mlockall"], 4 << 20, rounds=1)
        assert set(r) >= {"kernel", "populator", "size_bytes", "populate_ms", "victim"}
        assert r["kernel"] == "real" and r["size_bytes"] == 4 << 20 and r["error"] is None
        for op in ("fault", "writer"):
            assert set(r["victim"][op]) >= {"count", "p50_us", "p99_us", "p999_us", "max_us"}
        ours = [(s, e) for s, e in t.mm.owned]
        assert ours  # the victims' region, until close()
    finally:
        t.close()
    assert read_vm_lck_kb() == lck
    assert all(read_maps(s, e) == [] for s, e in ours)


def test_race_cell_shape_and_a_control_racer() -> None:
    t = S.RealTarget()
    try:
        r = S.run_race_cell(t, S.POPULATORS["populate-anon"], "mprotect", 4 << 20, rounds=2, seed=5)
    finally:
        t.close()
    assert r["outcomes"] == {"OK": 2, "INTERESTING": 0, "FORBIDDEN": 0} and r["wrong_pages"] == 0
    assert 0 <= r["window_hits"] <= 2


def test_memory_guard_refuses_what_does_not_fit() -> None:
    assert S.memory_guard(1 << 20, "a small run") is None
    assert "MemAvailable" in S.memory_guard(1 << 50, "a 1 PiB populate")
    assert main(["real", "latency", "--sizes", "1T"]) == 2
    assert main(["real", "latency", "--sizes", "12Q"]) == 2
    assert main(["real", "race", "--racer", "nope"]) == 2
