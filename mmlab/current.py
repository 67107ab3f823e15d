"""The calling thread as a task: ``current`` in the kernel.

Calls may come from any number of real threads at once; the calling thread is the task. Each
thread has one :class:`TaskCtx`, created on first use, which names the task, carries the id and
name of the syscall it is in (for provenance and the lock record) and the progress of a long
operation (for the stall watchdog).
"""

from __future__ import annotations

import itertools
import threading
from typing import Optional

__all__ = ["TaskCtx", "current", "set_task_name", "next_call_id", "task_by_index", "task_local"]

_local = threading.local()
# For hot paths (the recorded lock): ``task_local.ctx`` is current() without the function call,
# valid once the thread has called current(); fall back to current() on AttributeError.
task_local = _local
_task_index = itertools.count(1)
_call_ids = itertools.count(1)
_tasks: dict[int, "TaskCtx"] = {}


class TaskCtx:
    """Per-thread task state. ``index`` is a small number stored in the page table."""

    __slots__ = ("name", "tid", "index", "call_id", "call_name", "progress", "blocked_on", "__weakref__")

    def __init__(self, name: str, tid: int) -> None:
        self.name = name
        self.tid = tid
        self.index = next(_task_index) & 0xFFFF
        self.call_id = 0
        self.call_name = ""
        self.progress: Optional[tuple[str, int, int]] = None  # (what, done, total)
        self.blocked_on: Optional[str] = None

    def __repr__(self) -> str:
        return f"<task {self.name} tid={self.tid}>"


def current() -> TaskCtx:
    try:
        return _local.ctx  # type: ignore[no-any-return]
    except AttributeError:
        t = threading.current_thread()
        ctx = TaskCtx(t.name, threading.get_native_id())
        _local.ctx = ctx
        _tasks[ctx.index] = ctx
        return ctx


def set_task_name(name: str) -> TaskCtx:
    ctx = current()
    ctx.name = name
    return ctx


def task_by_index(index: int) -> Optional[TaskCtx]:
    return _tasks.get(index)


# next_call_id() -> int: a fresh id for one syscall or one user access, never reused within a
# process. The counter's own __next__ (a C call): every syscall and fault takes one, and a
# Python function around next() was a frame more on each.
next_call_id = _call_ids.__next__
