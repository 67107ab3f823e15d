"""Hangs become test failures: a deadline and the mmap_sem watchdog around a test body.

pytest-timeout's ``thread`` method (the project's global setting) dumps the stacks and calls
``os._exit(1)``: no teardown, no JUnit XML, and under xdist only a "worker crashed" line. So the
body of an mmlab test runs in its own thread, and the test's thread waits for it while polling
the stall watchdog (:class:`mmlab.harness.watchdog.Watchdog`, the hung-task detector) of every
model the test registered. When a task has waited for mmap_sem longer than the hang limit, or the
body is still running at its deadline (set below pytest-timeout's), :func:`call_guarded` dumps
every thread's stack and every model's lock state and raises :class:`HangError` -- an ordinary
test failure, and the session goes on. The stuck threads cannot be killed (Python has no way
to); they are daemon threads, named in the report, left blocked until the process ends.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
import traceback
from typing import Any, Callable, Iterable, Optional

from mmlab.harness.watchdog import Watchdog

__all__ = ["HangError", "call_guarded", "dump_threads", "lock_states", "find_models"]

POLL_S = 0.05


class HangError(AssertionError):
    """A test body hung: why, every thread's stack and every model's lock state."""

    def __init__(self, why: str, report: str, leaked: list[str]) -> None:
        super().__init__(f"HANG: {why}\n{report}")
        self.why = why
        self.report = report
        self.leaked = leaked


def dump_threads(skip: Iterable[int] = ()) -> str:
    """Every thread's stack, named (``sys._current_frames``)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    skip = set(skip)
    out = []
    for ident, frame in sorted(sys._current_frames().items(), key=lambda kv: names.get(kv[0], "")):
        if ident in skip:
            continue
        out.append(f"--- thread {names.get(ident, '?')} ({ident})\n" + "".join(traceback.format_stack(frame)))
    return "\n".join(out)


def find_models() -> list[Any]:
    """Every live MM in the process (gc), for the lock-state dump of a hang."""
    from mmlab.mm.mm_struct import MM
    return [o for o in gc.get_objects() if isinstance(o, MM)]


def lock_states(mms: Iterable[Any]) -> str:
    """Each model's mmap_sem holders and waiters (``MmapSem.state()``), one block per model that
    has any."""
    lines = []
    for i, mm in enumerate(mms):
        try:
            st = mm.mmap_sem.state()
        except Exception as e:  # noqa: BLE001 - a half-built model
            lines.append(f"model {i} ({getattr(mm, 'kernel', '?')}): no lock state ({e!r})")
            continue
        if not st["holders"] and not st["waiters"]:
            continue
        lines.append(f"model {i} ({mm.kernel.name}) {st['lock']}:")
        for h in st["holders"]:
            prog = f", progress {h['progress']}" if h.get("progress") else ""
            lines.append(f"  held {'W' if h['mode'] == 'W' else 'R'} by {h['task']} in {h['call'] or '(no syscall)'}#{h['call_id']} "
                         f"for {h['held_ns'] / 1e6:.1f} ms{prog}")
        for w in st["waiters"]:
            lines.append(f"  waited {'W' if w['mode'] == 'W' else 'R'} by {w['task']} in {w['call'] or '(no syscall)'}#{w['call_id']} "
                         f"for {w['waiting_ns'] / 1e6:.1f} ms")
    return "\n".join(lines) if lines else "(no model holds or waits for mmap_sem)"


def call_guarded(fn: Callable[[], Any], *, limit_s: float, lock_hang_s: Optional[float] = None,
                 models: Callable[[], list[Any]] = lambda: [], name: str = "mmlab-test-body") -> Any:
    """Run *fn* in its own thread and return its result (or raise its exception).

    Raises :class:`HangError` if *fn* has not returned after *limit_s*, or as soon as a task of
    one of ``models()`` waited for mmap_sem longer than *lock_hang_s* (the watchdog's hard
    limit)."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def body() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e
        finally:
            done.set()

    before = set(threading.enumerate())
    t = threading.Thread(target=body, name=name, daemon=True)
    t0 = time.monotonic()
    t.start()
    dogs: dict[int, Watchdog] = {}
    why = ""
    while not done.wait(POLL_S):
        if lock_hang_s is not None:
            for mm in models():
                wd = dogs.get(id(mm))
                if wd is None:
                    wd = dogs[id(mm)] = Watchdog(mm, stall_ms=lock_hang_s * 1e3, hang_ms=lock_hang_s * 1e3)
                try:
                    wd.check()
                except Exception:  # noqa: BLE001 - a racing look at the live lock state
                    continue
                if wd.hang is not None:
                    why = str(wd.hang["why"]) + f" (the hang limit is {lock_hang_s:g} s)"
                    break
        if why:
            break
        if time.monotonic() - t0 >= limit_s:
            why = f"the test body did not finish in {limit_s:g} s"
            break
    if done.is_set():
        if "error" in box:
            raise box["error"]
        return box.get("result")
    mms = models() or find_models()
    report = (f"lock state:\n{lock_states(mms)}\n\nevery thread's stack "
              f"(the test's own thread excluded):\n{dump_threads(skip=[threading.get_ident()])}")
    leaked = [x.name for x in threading.enumerate() if x not in before and x.is_alive()]
    raise HangError(why, report, leaked)
