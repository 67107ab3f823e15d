"""Chrome trace-event JSON from model runs and real traces: a track per thread, calls as slices,
lock waits and holds nested inside them."""

from __future__ import annotations

import collections
import json

from mmlab import MAP_ANONYMOUS, MAP_POPULATE, MAP_PRIVATE, MM, PROT_READ, PROT_WRITE, ZERO_COSTS, set_task_name
from mmlab.report.perfetto import model_events, write_model, write_trace
from mmlab.trace import records_from_lines


def _nested(events: list[dict]) -> list[str]:
    """Complete events that overlap without nesting, on any one thread."""
    by = collections.defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            by[(e["pid"], e["tid"])].append(e)
    bad = []
    for es in by.values():
        es.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack: list[tuple[float, float]] = []
        for e in es:
            s, t = e["ts"], e["ts"] + e["dur"]
            while stack and stack[-1][1] <= s + 1e-6:  # ts and dur are floats (us)
                stack.pop()
            if stack and t > stack[-1][1] + 1e-6:
                bad.append(e["name"])
            stack.append((s, t))
    return bad


def test_model_run_as_trace_events(tmp_path, threads) -> None:  # type: ignore[no-untyped-def]
    mm = MM("v6.18", ZERO_COSTS)

    def pop() -> None:
        set_task_name("populator")
        a = mm.mmap(0, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE)
        mm.munmap(a, 1 << 20)

    threads.start(pop, name="populator")
    threads.join()
    path = tmp_path / "m.json"
    n = write_model(str(path), [("v6.18 populate", mm)])
    d = json.loads(path.read_text())
    ev = d["traceEvents"]
    assert n == len(ev) and not _nested(ev)
    names = {e["args"]["name"] for e in ev if e["ph"] == "M"}
    assert "v6.18 populate" in names and any(x.startswith("populator:") for x in names)
    (call,) = [e for e in ev if e["ph"] == "X" and e["name"] == "mmap" and "POPULATE" in e["args"]["call"]]
    assert call["args"]["call"] == "mmap(0, 1 MiB, RW, PRIVATE|ANONYMOUS|POPULATE)"
    inside = sorted((e for e in ev if e["ph"] == "X" and e.get("cat") == "mmap_lock" and e["tid"] == call["tid"]
                     and call["ts"] <= e["ts"] and e["ts"] + e["dur"] <= call["ts"] + call["dur"]),
                    key=lambda e: e["ts"])
    assert [e["name"] for e in inside][:2] == ["hold W", "hold R (populate)"]
    munmap = [e for e in ev if e["ph"] == "X" and e["name"] == "munmap"]
    assert munmap and any(e["name"] == "hold R (downgrade)" for e in ev if e["ph"] == "X")


def test_real_trace_as_trace_events(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The same writer serves real traces: calls, waits carrying their holders, failed trylocks."""
    mm = "mm=00000000c7cbbc6a memcg_id=1"

    def line(comm: str, tid: int, us: int, rest: str) -> str:
        return f"{comm:>16s}-{tid:<7d} ({100:>7d}) [000] ..... {us // 1_000_000:5d}.{us % 1_000_000:06d}: {rest}\n"

    text = [line("pop", 10, 1000, "sys_mmap(addr: 0, len: 0x1000000, prot: 0x3, flags: 0x8022, fd: 0xffffffff, off: 0)"),
            line("pop", 10, 1001, f"mmap_lock_start_locking: {mm} write=false"),
            line("pop", 10, 1002, f"mmap_lock_acquire_returned: {mm} write=false success=true"),
            line("victim", 20, 1100, "sys_munmap(addr: 0x1000, len: 0x1000)"),
            line("victim", 20, 1101, f"mmap_lock_start_locking: {mm} write=true"),
            line("pop", 10, 5001, f"mmap_lock_released: {mm} write=false"),
            line("pop", 10, 5002, "sys_mmap -> 0x7f0000000000"),
            line("victim", 20, 5003, f"mmap_lock_acquire_returned: {mm} write=true success=true"),
            line("victim", 20, 5004, f"mmap_lock_released: {mm} write=true"),
            line("victim", 20, 5005, "sys_munmap -> 0x0"),
            line("victim", 20, 5100, "sys_mprotect(addr: 0x1000, len: 0x1000, prot: 0x1)"),
            line("victim", 20, 5101, f"mmap_lock_start_locking: {mm} write=true"),
            line("victim", 20, 5102, f"mmap_lock_acquire_returned: {mm} write=true success=false"),
            line("victim", 20, 5103, "sys_mprotect -> 0xfffffffffffffffc")]
    tr = records_from_lines(text, tgid=100)
    path = tmp_path / "t.json"
    write_trace(str(path), tr, process="test")
    ev = json.loads(path.read_text())["traceEvents"]
    assert not _nested(ev)
    (wait,) = [e for e in ev if e["ph"] == "X" and e["name"] == "wait W"]
    assert wait["tid"] == 20 and wait["dur"] == 3902.0
    assert wait["args"]["holders"] == ["pop:10 R in mmap(0, 16 MiB, RW, PRIVATE|ANONYMOUS|POPULATE) (held 3999 us)"]
    s_, f_ = sorted((e for e in ev if e["ph"] in "sf"), key=lambda e: e["ph"] != "s")  # holder -> waiter arrow
    assert (s_["tid"], f_["tid"], s_["id"]) == (10, 20, f_["id"]) and f_["ts"] == wait["ts"] + wait["dur"]
    (failed,) = [e for e in ev if e["ph"] == "i"]
    assert failed["name"] == "trylock W failed" and failed["tid"] == 20
    assert {e["args"]["name"] for e in ev if e["ph"] == "M"} == {"test", "pop:10", "victim:20"}


def test_demo_and_latency_write_perfetto(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from mmlab.cli import main
    d, lt = tmp_path / "d.json", tmp_path / "l.json"
    assert main(["demo", "--kernel", "v6.18", "--size", "4", "--time-scale", "0.1", "--perfetto", str(d)]) == 0
    ev = json.loads(d.read_text())["traceEvents"]
    assert not _nested(ev) and any(e["ph"] == "X" and e["name"] == "hold R (populate)" for e in ev)
    assert main(["latency", "--kernel", "v6.18", "--populator", "populate-anon", "--sizes", "1M,2M",
                 "--time-scale", "0.1", "--noise-ms", "20", "--seed", "1", "--perfetto", str(lt)]) == 0
    ev = json.loads(lt.read_text())["traceEvents"]
    procs = {e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "process_name"}
    assert procs == {"v6.18 noise floor", "v6.18 populate-anon 1M", "v6.18 populate-anon 2M"}
    assert not _nested(ev)


def test_a_wait_in_vma_start_write_is_on_the_waiters_track(seed: int) -> None:
    """bounded (populate_vma_lock) with the vma-writer victim: its waits for the populate's vma
    read hold are trace events too ("wait vma W", category vma_lock), not only mmap_sem's."""
    from mmlab import DEFAULT_COSTS
    from mmlab.harness.dilation import choose_dilation
    from mmlab.harness.latency import LatencyConfig, run_one
    from mmlab.harness.populators import POPULATORS
    from mmlab.kernels import get_kernel
    from mmlab.report.perfetto import model_events

    k = get_kernel("bounded")
    kept = []
    cfg = LatencyConfig([k], [POPULATORS["populate-anon"]], [16 << 20], costs=DEFAULT_COSTS, seed=seed,
                        stall_ms=1e9, victims=("vma-writer",), dilation=choose_dilation(DEFAULT_COSTS, k=8.0))
    cfg.on_run = lambda r, mm: kept.append(model_events(mm, "bounded"))
    r = run_one(k, cfg.populators[0], 16 << 20, cfg, seed)
    assert r.reason == "done" and not r.errors
    ev = kept[0] if kept else []
    vma_waits = [e for e in ev if e.get("cat") == "vma_lock"]
    assert vma_waits and all(e["name"] == "wait vma W" and e["dur"] > 0 for e in vma_waits), ev[:5]
