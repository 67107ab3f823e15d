"""`mmlab trace` end to end, as a user runs it (a subprocess), on programs written without mmlab."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from mmlab.trace import instances_of_mine

COUNTED = ("mmap_lock_start_locking", "mmap_lock_acquire_returned", "mmap_lock_released")


def _mmlab(*args: str, **kw) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "mmlab", "trace", *args], capture_output=True, text=True,
                          env=env, timeout=100, **kw)


def _no_instance_of(pid: int) -> None:
    assert not [n for n in instances_of_mine() if n.startswith(f"mmlab-trace-{pid}-")]


def test_bad_arguments_exit_2(capsys) -> None:  # type: ignore[no-untyped-def]
    """Refused before anything runs (in-process: nothing is forked for a bad command line)."""
    from mmlab.cli import main
    assert main(["trace"]) == 2
    assert main(["trace", "--pid", "1", "--", "true"]) == 2
    assert main(["trace", "--duration", "1", "--", "true"]) == 2
    assert main(["trace", "--buffer-kb", "1", "--", "true"]) == 2
    assert "buffer-kb" in capsys.readouterr().err
    assert main(["trace", "--pid", "999999999"]) == 2


def test_exit_status_passed_through(tracing: None, tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = _mmlab("--text", "--json", str(tmp_path / "t.json"), "--", "sh", "-c", "exit 7")  # the text reader too
    assert r.returncode == 7, r.stderr
    d = json.loads((tmp_path / "t.json").read_text())
    assert d["exit_status"] == 7 and d["lost"] == 0 and d["counts"]["mmap_lock_start_locking"] > 0
    r = _mmlab("--", "sh", "-c", "kill -9 $$")  # a child that dies of a signal: 128 + 9
    assert r.returncode == 137, r.stderr


def test_ctrl_c_exits_130_and_cleans_up(tracing: None) -> None:
    p = subprocess.Popen([sys.executable, "-m", "mmlab", "trace", "--", "sleep", "60"], stderr=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, start_new_session=True,
                         env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        assert p.stderr is not None
        line = p.stderr.readline()  # "mmlab trace: tracing sleep 60 (pid N) in mmlab-trace-..."
        assert "tracing sleep 60" in line, line
        os.killpg(p.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole foreground group
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130
    assert "mmap_lock waits per thread" in out
    _no_instance_of(p.pid)


def test_pid_mode(tracing: None, tmp_path) -> None:  # type: ignore[no-untyped-def]
    victim = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        r = _mmlab("--pid", str(victim.pid), "--duration", "0.2", "--json", str(tmp_path / "p.json"))
    finally:
        victim.communicate(b"", timeout=30)
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "p.json").read_text())
    assert d["lost"] == 0 and "threads" in d and "worst" in d
    assert _mmlab("--pid", str(victim.pid), "--duration", "0.2").returncode == 2  # gone: no such process


def _perf_counts(prog: str) -> dict[str, int]:
    perf = shutil.which("perf")
    if not perf:
        pytest.skip("perf is not installed: no independent count of the tracepoints")
    r = subprocess.run([perf, "stat", "-x,", "-e", ",".join(f"mmap_lock:{e}" for e in COUNTED), "--", prog, "256", "10000"],
                       capture_output=True, text=True, timeout=100)
    counts = {}
    for line in r.stderr.splitlines():
        f = line.split(",")
        if len(f) > 2 and f[2].startswith("mmap_lock:"):
            if not f[0].strip().isdigit():
                pytest.skip(f"perf cannot count {f[2]}: {f[0]}")
            counts[f[2].split(":")[1]] = int(f[0])
    if r.returncode != 0 or len(counts) != 3:
        pytest.skip(f"perf stat could not count the mmap_lock tracepoints: {r.stderr.strip()[-200:]}")
    return counts


def test_acceptance_populate_stalls_the_looping_thread(tracing: None, prog: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The issue's check: a two-thread C program (a 256 MiB anonymous MAP_POPULATE beside a
    one-page mmap+munmap loop) under `mmlab trace`: the victim's worst wait is at least half the
    populate and is attributed to the populating thread's mmap in mode R; the tracepoint counts
    agree within 3% with perf stat's on the same program."""
    j = tmp_path / "t.json"
    pf = tmp_path / "p.json"
    r = _mmlab("--json", str(j), "--perfetto", str(pf), "--stall-ms", "50", "--", prog, "256", "10000")
    assert r.returncode == 0, r.stderr
    d = json.loads(j.read_text())
    assert d["lost"] == 0
    names = {t["name"]: t for t in d["threads"]}
    assert {"victim", "populate"} <= set(names), names
    worst = [w for w in d["worst"] if w["waiter"]["name"] == "victim"][0]
    assert worst["wait_us"] == names["victim"]["max_us"]
    top = worst["holders"][0]
    assert top["name"] == "populate" and top["mode"] == "R"
    assert top["call"] == "mmap(0, 256 MiB, RW, PRIVATE|ANONYMOUS|POPULATE)"
    assert worst["wait_us"] >= 0.5 * top["held_us"], (worst, top)
    import re
    populate_ms = float(re.search(r"populate 256 MiB: ([\d.]+) ms", r.stdout).group(1))  # the program's own clock
    assert worst["wait_us"] >= 0.5 * populate_ms * 1e3, (worst["wait_us"], populate_ms)
    assert "victim" in r.stdout and "held by populate" in r.stdout
    # the model's stall watchdog, replayed: the victim, blocked 50 ms, with the populate holding
    (rep,) = [x for x in d["watchdog"] if x["tid"] == worst["waiter"]["tid"]
              and abs(x["final_wait_ms"] - worst["wait_us"] / 1e3) < 0.01]
    assert rep["mode"] == "W" and [(h["task"], h["mode"], h["call"]) for h in rep["holders"]] == [("populate", "R", "mmap")]
    ev = [e for e in json.loads(pf.read_text())["traceEvents"] if e["ph"] == "X"]
    (pop,) = [e for e in ev if e["name"] == "mmap" and "POPULATE" in e["args"]["call"]]
    inside = [e for e in ev if e["tid"] == pop["tid"] and e["cat"] == "mmap_lock"
              and pop["ts"] <= e["ts"] <= e["ts"] + e["dur"] <= pop["ts"] + pop["dur"]]
    assert [e["name"] for e in inside][-1] == "hold R" and inside[-1]["dur"] >= top["held_us"] - 1
    perf = _perf_counts(prog)
    for e in COUNTED:
        assert abs(d["counts"][e] - perf[e]) <= 0.03 * perf[e], (e, d["counts"][e], perf[e])


def _wait_for_tracing_line(p: subprocess.Popen) -> list[str]:  # type: ignore[type-arg]
    """stderr up to and with the "mmlab trace: tracing ..." line (the capture is then set up and the
    program started); fails if stderr ends first."""
    assert p.stderr is not None
    seen = []
    for line in p.stderr:
        seen.append(line)
        if line.startswith("mmlab trace: tracing "):
            return seen
    pytest.fail(f"mmlab trace ended before tracing: {''.join(seen)}")


def test_sigterm_exits_143_and_cleans_up(tracing: None) -> None:
    p = subprocess.Popen([sys.executable, "-m", "mmlab", "trace", "--", "sleep", "60"], stderr=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        assert "tracing sleep 60" in _wait_for_tracing_line(p)[-1]
        p.terminate()
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 143 and "exited with status 143" in out, err
    assert "could not be removed" not in err
    _no_instance_of(p.pid)


def test_a_program_that_does_not_exist_is_one_line_and_exit_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Checked before anything is traced or forked: no report of mmlab's own child."""
    for prog in ("no-such-program-mmlab", str(tmp_path / "missing"), str(tmp_path)):
        r = _mmlab("--", prog, "arg")
        assert r.returncode == 2 and r.stdout == "", (prog, r)
        assert r.stderr.count("\n") == 1 and "no such program" in r.stderr, r.stderr


def test_a_failed_exec_is_127_without_a_report(tracing: None, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An executable file the kernel cannot run (ENOEXEC): exit 127 as a shell's, one error line,
    no report of the forked child, and no instance left."""
    bad = tmp_path / "garbage"
    bad.write_bytes(b"\x7fELF\x00\x00\x00not really")
    bad.chmod(0o755)
    r = _mmlab("--", str(bad))
    assert r.returncode == 127, r
    assert r.stdout == "" and "cannot run" in r.stderr and "Exec format error" in r.stderr, r.stderr
    assert "tracing" not in r.stderr


def test_pid_elapsed_is_the_traced_interval(tracing: None, tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """--duration 0.2 with a stop() that takes a second more (a slow drain): the elapsed time
    reported is the traced interval, not the drain."""
    import time

    from mmlab.cli import main
    from mmlab.trace import Capture

    real_stop = Capture.stop

    def slow_stop(self):  # type: ignore[no-untyped-def]
        time.sleep(1.0)  # stands for the drain of a full buffer, not a synchronization
        return real_stop(self)

    monkeypatch.setattr(Capture, "stop", slow_stop)
    victim = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        j = tmp_path / "e.json"
        assert main(["trace", "--pid", str(victim.pid), "--duration", "0.2", "--json", str(j)]) == 0
    finally:
        victim.communicate(b"", timeout=30)
    d = json.loads(j.read_text())
    assert 0.2 <= d["elapsed_s"] < 1.0, d["elapsed_s"]
    head = capsys.readouterr().out.splitlines()[0]
    assert f": {d['elapsed_s']:.2f} s," in head, head


def test_instance_not_removed_is_reported_with_exit_1(tracing: None, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from mmlab.cli import main
    from mmlab.trace import tracefs

    mine = f"/mmlab-trace-{os.getpid()}-"
    real_rmdir = os.rmdir

    def rmdir(path, *a, **kw):  # type: ignore[no-untyped-def]
        if mine in str(path):
            raise PermissionError(1, "Operation not permitted")
        return real_rmdir(path, *a, **kw)

    monkeypatch.setattr(tracefs.os, "rmdir", rmdir)
    victim = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert main(["trace", "--pid", str(victim.pid), "--duration", "0.1"]) == 1
    finally:
        victim.communicate(b"", timeout=30)
        monkeypatch.undo()
        for n in instances_of_mine():
            if n.startswith(mine[1:]):
                tracefs._rmdir_instance(os.path.join(tracefs.tracefs_root() or tracefs.TRACEFS, "instances", n))
    out, err = capsys.readouterr()
    assert "mmap_lock waits per thread" in out  # the report of what was captured is still printed
    assert "error: the tracing instance mmlab-trace-" in err and "could not be removed" in err, err


def test_reader_queued_behind_waiting_writer(tracing: None, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """progs/convoy.c: while the main thread populates 32 MiB under the read lock, a writer waits,
    and a reader (mincore) that asks after it waits too, though only a reader holds the lock
    (Linux 6.18's rwsem, as the model's fair lock): the report names the waiting writer it queued
    behind, and the populate as the holder."""
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed")
    exe = str(tmp_path / "convoy")
    subprocess.run(["gcc", "-O2", "-pthread", "-o", exe, os.path.join(os.path.dirname(__file__), "progs", "convoy.c")],
                   check=True, capture_output=True)
    for _ in range(3):  # the reader must ask while the writer waits (both share 2 busy CPUs)
        j = tmp_path / "c.json"
        r = _mmlab("--worst", "20", "--json", str(j), "--", exe, "32")
        assert r.returncode == 0, r.stderr
        d = json.loads(j.read_text())
        assert d["lost"] == 0
        convoy = [w for w in d["worst"] if w["waiter"]["name"] == "reader" and w["queued_behind"]
                  and w["waiter"]["call"].startswith("mincore(")]  # (not its stack's madvise at thread exit)
        if convoy:
            w = convoy[0]
            assert w["waiter"]["mode"] == "R"
            assert [q["name"] for q in w["queued_behind"]] == ["writer"]
            assert w["holders"][0]["mode"] == "R" and "POPULATE" in w["holders"][0]["call"]
            assert "queued behind a waiting writer: writer:" in r.stdout
            return
    pytest.fail("in 3 runs the reader never asked for the lock while the writer waited")
