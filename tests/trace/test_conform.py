"""`mmlab conform`: the normaliser, the comparison, hand-made traces read by the real parser, the
verdict moving with a profile switch, a small real-kernel run, and the command's exit status and JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mmlab.cli import main
from mmlab.kernels import get_kernel
from mmlab.real import conform as C
from mmlab.real.conform import CountTolerance, Shape, Step, compare_shapes, normalise
from mmlab.trace import records_from_lines


# ---------------------------------------------------------------------------- the normaliser
@pytest.mark.parametrize("holds,text", [
    ([], "—"),
    ([("W", "")], "W"),
    ([("W", ""), ("R", "")], "W R"),
    ([("W", ""), ("R", "downgrade")], "W ↓R"),
    ([("W", ""), ("R", ""), ("R", ""), ("R", "")], "W R×3"),
    ([("W", ""), ("R", "downgrade"), ("R", "")], "W ↓R R"),  # a downgrade never merges with a plain R
    ([("R", ""), ("W", ""), ("R", ""), ("R", "")], "R W R×2"),
    ([("W", "failed"), ("W", "")], "W✗ W"),
])
def test_normalise(holds: list, text: str) -> None:
    s = normalise(holds)
    assert str(s) == text
    assert Shape.parse(text) == s


class _R:
    def __init__(self, mode: str, how: str) -> None:
        self.mode, self.how = mode, how


def test_model_and_trace_records_map_to_the_same_holds() -> None:
    # the model records only successful trylocks ("trylock"), and why a read hold was taken
    model = [_R("W", ""), _R("R", "populate"), _R("R", "retake"), _R("R", "trylock"), _R("R", "downgrade")]
    assert C.holds_from_model(model) == [("W", ""), ("R", ""), ("R", ""), ("R", ""), ("R", "downgrade")]
    # the trace's "trylock" is a failed one (success=false)
    trace = [_R("W", "trylock"), _R("W", ""), _R("R", "downgrade")]
    assert C.holds_from_trace(trace) == [("W", "failed"), ("W", ""), ("R", "downgrade")]


# ---------------------------------------------------------------------------- the comparison
_TOL = CountTolerance("R", factor=4.0, at_least=2, why="test")


@pytest.mark.parametrize("model,real,tol,verdict", [
    ("W R", "W R", None, "agree"),
    ("W ↓R", "W ↓R", None, "agree"),
    ("W ↓R", "W", None, "mismatch"),
    ("W", "W R", None, "mismatch"),
    ("—", "R", None, "mismatch"),
    ("W R×5", "W R×6", None, "mismatch"),      # no tolerance: counts are exact
    ("W R×5", "W R×13", _TOL, "tolerance"),
    ("W R×5", "W R×21", _TOL, "mismatch"),     # outside ×4
    ("W R×5", "W R", _TOL, "mismatch"),        # the real side never dropped the lock: below at_least
    ("W R×5", "W ↓R×5", _TOL, "mismatch"),     # a tolerance on counts never excuses a different token
    ("R W R×3", "R W R×7", _TOL, "tolerance"),
])
def test_compare_shapes(model: str, real: str, tol: Any, verdict: str) -> None:
    v, note = compare_shapes(Shape.parse(model), Shape.parse(real), tol)
    assert v == verdict, note


# ---------------------------------------------------------------------------- hand-made traces
_MM = "mm=00000000c7cbbc6a memcg_id=1"


def _line(tid: int, t_us: int, what: str) -> str:
    return f"          child-{tid}   (  {tid}) [001] .....   {t_us // 1_000_000}.{t_us % 1_000_000:06d}: {what}\n"


def _trace(tid: int, calls: list[tuple[int, str, str, list[str], str]]) -> Any:
    """calls: (t_us, name, args text, lock events, ret text); each lock event takes 1 µs."""
    lines = []
    for t, name, args, locks, ret in calls:
        lines.append(_line(tid, t, f"sys_{name}({args})"))
        for i, ev in enumerate(locks, 1):
            lines.append(_line(tid, t + i, f"{ev.split()[0]}: {_MM} {' '.join(ev.split()[1:])}"))
        lines.append(_line(tid, t + len(locks) + 1, f"sys_{name} -> {ret}"))
    return records_from_lines(lines, tgid=tid)


_W = ["mmap_lock_start_locking write=true", "mmap_lock_acquire_returned write=true success=true",
      "mmap_lock_released write=true"]
_R_ = ["mmap_lock_start_locking write=false", "mmap_lock_acquire_returned write=false success=true",
       "mmap_lock_released write=false"]
_DOWN = ["mmap_lock_start_locking write=true", "mmap_lock_acquire_returned write=true success=true",
         "mmap_lock_acquire_returned write=false success=true", "mmap_lock_released write=false"]


def _step(label: str, call: str, args: tuple, t_us: int, tid: int = 500) -> Step:
    return Step(label, call, args, ret=0, t0=t_us * 1000, t1=(t_us + 50) * 1000, tid=tid)


def test_real_steps_are_read_from_the_trace_by_tid_window_and_call() -> None:
    tr = _trace(500, [
        (100_000, "mmap", "addr: 0, len: 0x800000, prot: 0x3, flags: 0x8022, fd: 0xffffffff, off: 0",
         _W + _R_, "0x7f0000000000"),
        (100_020, "munmap", "addr: 0x7f00dead0000, len: 0x40000", _DOWN, "0x0"),  # the interpreter's own
        (200_000, "munmap", "addr: 0x7f0000000000, len: 0x800000", _DOWN, "0x0"),
        (300_000, "madvise", "start: 0x7f0000000000, len_in: 0x400000, behavior: 0x4", [], "0x0"),
    ])
    steps = [_step("pop", "mmap", (0, 8 << 20), 100_000), _step("unmap", "munmap", (0x7F0000000000, 8 << 20), 200_000),
             _step("dontneed", "madvise", (0x7F0000000000, 4 << 20, 4), 300_000),
             _step("unseen", "mprotect", (0x7F0000000000, 4096, 1), 400_000),
             _step("other thread", "mmap", (0, 8 << 20), 100_000, tid=501)]
    C.real_steps_from_trace(tr, steps)
    assert [str(s.shape) for s in steps[:3]] == ["W R", "W ↓R", "—"]
    assert steps[3].error and "0 traced mprotect" in steps[3].error  # not observed: an error, not "—"
    assert steps[4].error  # another thread's call window does not borrow this thread's records


def test_fault_steps_are_read_from_the_fault_records_at_their_page() -> None:
    lines = [
        _line(500, 100_000, "page_fault_user: address=0x7f0000000010 ip=0x7fdeadfaf8bb error_code=0x6"),
        _line(500, 100_001, f"mmap_lock_acquire_returned: {_MM} write=false success=true"),
        _line(500, 100_003, f"mmap_lock_released: {_MM} write=false"),
        _line(500, 100_010, "page_fault_user: address=0x7f0000004000 ip=0x7fdeadfaf8bb error_code=0x6"),
        _line(500, 200_000, "sys_munmap(addr: 0x7f0000000000, len: 0x100000)"),
        *[_line(500, 200_001 + i, f"{ev.split()[0]}: {_MM} {' '.join(ev.split()[1:])}") for i, ev in enumerate(_DOWN)],
        _line(500, 200_010, "sys_munmap -> 0x0"),
    ]
    tr = records_from_lines(lines, tgid=500)
    steps = [Step("first", "fault", (0x7F0000000000, 1), t0=99_999_000, t1=100_005_000, tid=500),
             Step("second", "fault", (0x7F0000004000, 1), t0=100_008_000, t1=100_012_000, tid=500),
             Step("elsewhere", "fault", (0x7F0000008000, 1), t0=100_008_000, t1=100_012_000, tid=500)]
    C.real_steps_from_trace(tr, steps)
    assert [str(s.shape) for s in steps[:2]] == ["R", "—"]
    assert steps[2].error  # no fault at that page in the window: not observed, not "—"


def test_a_trace_that_lost_events_gives_errors_not_shapes() -> None:
    tr = _trace(500, [(100_000, "munmap", "addr: 0x7f0000000000, len: 0x800000", _DOWN, "0x0")])
    tr.lost = 3
    steps = [_step("unmap", "munmap", (0x7F0000000000, 8 << 20), 100_000)]
    C.real_steps_from_trace(tr, steps)
    assert steps[0].error == "the trace lost 3 events" and not steps[0].holds


# ---------------------------------------------------------------------------- verdicts from the model's records
def _real(entry: str, shapes: dict[str, str]) -> list[Step]:
    """Real steps with given shapes, labelled like the entry's own calls."""
    return [Step(s.label, s.call, s.args, ret=0, holds=_holds(shapes[s.label]))
            for s in C.run_model(C.CATALOGUE[entry], "v6.18")]


def _holds(text: str) -> list:
    out = []
    for tok, n in Shape.parse(text).runs:
        h = ("R", "downgrade") if tok == "↓R" else (tok[0], "failed") if tok.endswith("✗") else (tok, "")
        out += [h] * n
    return out


@pytest.mark.parametrize("kernel,verdict", [("v6.18", "agree"), ("v6.18+munmap_downgrade=off", "MISMATCH"),
                                            ("v3.9", "MISMATCH")])
def test_a_switch_moves_the_munmap_verdict(kernel: str, verdict: str) -> None:
    e = C.CATALOGUE["munmap"]
    real = _real("munmap", {"munmap 8M populated": "W ↓R"})
    [row] = C.judge(e, C.run_model(e, kernel), real)
    assert row.verdict == verdict and row.real == "W ↓R"
    assert row.model == ("W ↓R" if verdict == "agree" else "W")


@pytest.mark.parametrize("kernel,model", [("v6.18", "W R"), ("v3.7", "W"), ("v3.7+patch3", "W R"),
                                          ("v6.18+populate_after_unlock=off", "W")])
def test_populate_after_unlock_moves_the_mmap_populate_verdict(kernel: str, model: str) -> None:
    e = C.CATALOGUE["populate-anon"]
    [row] = C.judge(e, C.run_model(e, kernel), _real("populate-anon", {"mmap(ANON|POPULATE) 8M": "W R"}))
    assert row.model == model and row.verdict == ("agree" if model == "W R" else "MISMATCH")


def test_the_read_ahead_tolerance_follows_the_models_window() -> None:
    """The model's count comes from its read-ahead window: a 32 MiB cold populate is W R×5 with
    8 MiB windows and W R×17 with 2 MiB ones; a real R×12 is within ×4 of the first only when the
    window says so, and far outside it with 128 KiB windows."""
    e = C.CATALOGUE["populate-file-cold"]
    label = "mmap(file, POPULATE) 32M, cold"
    real = _real("populate-file-cold", {label: "W R×12"})
    rows = {kb: C.judge(e, C.run_model(e, "v6.18", C.model_costs(kb)), real)[0] for kb in (8192, 2048, 128)}
    assert rows[8192].model == "W R×5" and rows[8192].verdict == "tolerance"
    assert rows[2048].model == "W R×17" and rows[2048].verdict == "tolerance"
    assert rows[128].verdict == "MISMATCH"


def test_the_catalogues_read_ahead_tolerance_is_the_measured_worst_plus_a_margin() -> None:
    """Measured real/model up to 3.3: R×16 against the model's R×5 (3.2) passes, R×21 (4.2), a kernel
    retaking per part of a window the model does not have, does not; the ratio is in the note (JSON)."""
    e = C.CATALOGUE["populate-file-cold"]
    label = "mmap(file, POPULATE) 32M, cold"
    ms = C.run_model(e, "v6.18", C.model_costs(8192))
    [ok] = C.judge(e, ms, _real("populate-file-cold", {label: "W R×16"}))
    [far] = C.judge(e, ms, _real("populate-file-cold", {label: "W R×21"}))
    assert ok.model == "W R×5" and ok.verdict == "tolerance" and "ratio 3.20" in ok.note
    assert far.verdict == "MISMATCH"


@pytest.mark.parametrize("kernel,verdict", [("v6.18", "tolerance"), ("v6.18+populate_fault_retry=off", "MISMATCH"),
                                            ("v3.9", "tolerance"), ("v3.7", "MISMATCH")])
def test_the_tolerance_never_hides_a_lock_that_is_not_dropped(kernel: str, verdict: str) -> None:
    """Without FAULT_FLAG_ALLOW_RETRY the model holds one read lock across every disk read (W R);
    the count tolerance needs both sides to have dropped it, so the verdict moves."""
    e = C.CATALOGUE["populate-file-cold"]
    [row] = C.judge(e, C.run_model(e, kernel), _real("populate-file-cold", {"mmap(file, POPULATE) 32M, cold": "W R×12"}))
    assert row.verdict == verdict, row


def test_a_listed_difference_excuses_only_what_its_check_explains() -> None:
    e = C.CATALOGUE["munmap"]
    only_w_vs_downgrade = C.ProtocolDifference(
        "test-no-downgrade", "test: the model does not downgrade",
        lambda entry, step, model, real: str(model) == "W" and str(real) == "W ↓R")
    ms = C.run_model(e, "v6.18+munmap_downgrade=off")
    [row] = C.judge(e, ms, _real("munmap", {"munmap 8M populated": "W ↓R"}), known=[only_w_vs_downgrade])
    assert row.verdict == "known" and "test-no-downgrade" in row.note
    [row] = C.judge(e, ms, _real("munmap", {"munmap 8M populated": "W R"}), known=[only_w_vs_downgrade])
    assert row.verdict == "MISMATCH"  # same entry, same name: its check does not explain this pair


def test_errors_are_rows_not_agreement() -> None:
    e = C.CATALOGUE["munmap"]
    ms = C.run_model(e, "v6.18")
    rows = C.judge(e, ms, [], real_error="the child exited 1")
    assert [r.verdict for r in rows] == ["error"]
    real = _real("munmap", {"munmap 8M populated": "W ↓R"})
    real[0].error = "0 traced munmap calls in the step's window (expected one)"
    assert [r.verdict for r in C.judge(e, ms, real)] == ["error"]


def test_only_plain_v618_is_the_reference_on_6_18() -> None:
    assert C.is_reference(get_kernel("v6.18"), "6.18.44")
    for spec in ("v6.18+munmap_downgrade=off", "v3.7", "v3.9", "bounded", "v6.18+populate_batch_pages=8"):
        assert not C.is_reference(get_kernel(spec), "6.18.44")


def test_the_reference_is_the_profile_that_claims_the_machines_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a 6.16 kernel MADV_DONTNEED takes mmap_lock (and mremap moves one vma): the reference is
    v6.18 without those behaviours, not plain v6.18."""
    old = "v6.18+madvise_vma_lock=off+mremap_move_multi_vma=off"
    assert C.is_reference(get_kernel(old), "6.16.3-100.fc42")
    assert not C.is_reference(get_kernel("v6.18"), "6.16.3-100.fc42")
    assert not C.is_reference(get_kernel("v6.18+madvise_vma_lock=off"), "6.16.3-100.fc42")
    assert C.is_reference(get_kernel("v3.9"), "3.10.0-1160.el7")
    assert not C.is_reference(get_kernel("v6.18"), "3.2.0")  # no profile claims it
    monkeypatch.setattr(os, "uname", lambda: os.uname_result(("Linux", "h", "6.16.3-100.fc42", "#1", "x86_64")))
    assert C.reference() == old
    rep = C.conform([old, "v6.18"], [C.CATALOGUE["munmap"]], None)
    assert [kt["reference"] for kt in rep["kernels"]] == [True, False]


def test_entries_select_and_reject() -> None:
    assert [e.name for e in C.select(["munmap", "brk", "munmap"])] == ["munmap", "brk"]
    with pytest.raises(ValueError, match="unknown entry 'nope'"):
        C.select(["nope"])
    isolated = {e.name for e in C.CATALOGUE.values() if e.isolated}
    assert isolated == {"mlockall", "mlockall-onfault", "brk"}  # process-wide state: a child each


# ---------------------------------------------------------------------------- the command, without a kernel
def _fake_real(shapes: dict[str, dict[str, str]]):  # type: ignore[no-untyped-def]
    def run_real(entries, progress=None, timeout=120.0):  # type: ignore[no-untyped-def]
        return {e.name: {"steps": _real(e.name, shapes[e.name]), "error": None, "lost": 0, "counts": {}}
                for e in entries}
    return run_real


def test_exit_1_on_an_unexplained_v618_mismatch_and_0_for_a_report(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("mmlab.trace.unavailable_reason", lambda: None)
    monkeypatch.setattr(C, "run_real", _fake_real({"munmap": {"munmap 8M populated": "W"}}))
    out = tmp_path / "c.json"
    assert main(["conform", "--entry", "munmap", "--json", str(out)]) == 1
    doc = json.loads(out.read_text())
    [kt] = doc["kernels"]
    assert kt["reference"] and kt["unexplained"] == 1 and doc["exit"] == 1
    assert kt["rows"][0]["verdict"] == "MISMATCH" and kt["rows"][0]["real"] == "W" and kt["rows"][0]["model"] == "W ↓R"
    # the same real sequence against a profile that does not downgrade: agrees, and a report only
    assert main(["conform", "--entry", "munmap", "--kernel", "v6.18+munmap_downgrade=off"]) == 0
    assert "report" in capsys.readouterr().out


def test_a_hung_child_exits_3_and_a_failed_one_1_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess
    monkeypatch.setattr("mmlab.trace.unavailable_reason", lambda: None)

    def hang(entries, progress=None, timeout=120.0):  # type: ignore[no-untyped-def]
        raise subprocess.TimeoutExpired(["python", "-m", "mmlab.real.conform"], timeout)

    def broken(entries, progress=None, timeout=120.0):  # type: ignore[no-untyped-def]
        raise RuntimeError("the conformance child did not start: '' ImportError")

    monkeypatch.setattr(C, "run_real", hang)
    assert main(["conform", "--entry", "munmap"]) == 3
    err = capsys.readouterr().err
    assert "hang" in err and "120 s" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    monkeypatch.setattr(C, "run_real", broken)
    assert main(["conform", "--entry", "munmap"]) == 1
    err = capsys.readouterr().err
    assert "did not start" in err and len(err.strip().splitlines()) == 1


def test_lost_events_of_one_child_are_counted_once(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("mmlab.trace.unavailable_reason", lambda: None)
    fake = _fake_real({n: {st.label: str(st.shape) for st in C.run_model(C.CATALOGUE[n], "v6.18")}
                       for n in ("munmap", "mprotect")})

    def lossy(entries, progress=None, timeout=120.0):  # type: ignore[no-untyped-def]
        return {n: dict(r, lost=7, group=0) for n, r in fake(entries).items()}  # one shared child, 7 lost

    monkeypatch.setattr(C, "run_real", lossy)
    main(["conform", "--entry", "munmap,mprotect"])
    assert "trace events lost: 7" in capsys.readouterr().out


def test_bad_arguments_exit_2_and_list_runs_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conform", "--entry", "nope"]) == 2
    assert "unknown entry" in capsys.readouterr().err
    assert main(["conform", "--kernel", "v9.9"]) == 2
    assert main(["conform", "--kernel", "v6.18+no_such_switch"]) == 2
    assert main(["conform", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in C.CATALOGUE) and "within ×4" in out


def test_model_only_needs_no_tracing(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("mmlab.trace.unavailable_reason", lambda: "no tracefs here")
    assert main(["conform", "--entry", "munmap"]) == 2
    assert "no tracefs here" in capsys.readouterr().err
    assert main(["conform", "--entry", "munmap", "--model-only", "--kernel", "v6.18,v3.7"]) == 0
    out = capsys.readouterr().out
    assert "W ↓R" in out and "model v3.7" in out


# ---------------------------------------------------------------------------- the real kernel
def test_real_kernel_agrees_on_three_entries(tracing: None) -> None:
    entries = C.select(["munmap", "populate-anon", "madvise"])
    real = C.run_real(entries)
    rep = C.conform(["v6.18"], entries, real)
    [kt] = rep["kernels"]
    got = {r["label"]: (r["real"], r["verdict"]) for r in kt["rows"]}
    assert got["munmap 8M populated"] == ("W ↓R", "agree"), kt["rows"]
    assert got["mmap(ANON|POPULATE) 8M"] == ("W R", "agree"), kt["rows"]
    assert got["madvise(DONTNEED) 4M"] == ("—", "agree"), kt["rows"]
    assert kt["unexplained"] == 0, kt["rows"]
    assert all(r["lost"] == 0 for r in real.values())


def test_real_kernel_command_json(tracing: None, tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    assert main(["conform", "--entry", "mprotect,brk", "--kernel", "v6.18,v3.7", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["exit"] == 0 and [k["kernel"] for k in doc["kernels"]] == ["v6.18", "v3.7"]
    ref, old = doc["kernels"]
    assert ref["unexplained"] == 0 and {r["verdict"] for r in ref["rows"]} == {"agree"}
    shapes = {s["label"]: s["shape"] for s in doc["real"]["brk"]["steps"]}
    assert shapes["brk(+1M) under MCL_FUTURE"] == "W R" and shapes["brk(-1M) shrink"] == "W ↓R"
    assert any(r["verdict"] == "MISMATCH" for r in old["rows"])  # v3.7 populates brk under the write lock


def test_an_interrupt_kills_the_child_and_removes_its_files(monkeypatch: pytest.MonkeyPatch, libc: Any) -> None:
    import os

    started: list[int] = []
    dirs: list[str] = []

    class Interrupted:
        def __init__(self, pid: int, **kw: Any) -> None:
            started.append(pid)
            with open(f"/proc/{pid}/cmdline", "rb") as f:  # ... -m mmlab.real.conform --child DIR NAMES
                argv = f.read().decode().split("\0")
            dirs.append(argv[argv.index("--child") + 1])

        def __enter__(self) -> None:
            raise KeyboardInterrupt

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr("mmlab.trace.Capture", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        C.run_real(C.select(["populate-file"]))
    [pid] = started
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: not left running, not a zombie
    assert not os.path.exists(f"/proc/{pid}")
    [d] = dirs
    assert d.startswith(C.file_dir()) and not os.path.exists(d)
