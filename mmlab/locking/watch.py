"""Watching a recorded lock as events: who holds it and who waits, without polling.

``watch(sem)`` swaps the lock's ``holders`` and ``waiters`` dicts for ones that notify a
condition variable on every change, so a test or a tool can wait for "task X is queued behind
the writer" with ``wait_until(cv, cond)`` instead of sleeping and re-checking. It costs one
notify per lock operation, so it is for tests and diagnostics, never for a measured run.
"""

from __future__ import annotations

import threading
from typing import Callable

from mmlab.locking.rwsem import MmapSem

__all__ = ["Notifying", "watch", "wait_until"]


class Notifying(dict):  # type: ignore[type-arg]
    """A dict that wakes a condition variable on every change."""

    def __init__(self, cv: threading.Condition, *args: object) -> None:
        super().__init__(*args)
        self._cv = cv

    def _changed(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def __setitem__(self, k, v) -> None:  # type: ignore[no-untyped-def]
        super().__setitem__(k, v)
        self._changed()

    def __delitem__(self, k) -> None:  # type: ignore[no-untyped-def]
        super().__delitem__(k)
        self._changed()

    def pop(self, *args):  # type: ignore[no-untyped-def]
        v = super().pop(*args)
        self._changed()
        return v


def watch(sem: MmapSem) -> threading.Condition:
    """Make *sem*'s holders and waiters notify the returned condition on every change."""
    cv = threading.Condition()
    sem.holders = Notifying(cv, sem.holders)
    sem.waiters = Notifying(cv, sem.waiters)
    return cv


def wait_until(cv: threading.Condition, cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Wait on *cv*'s notifications until *cond()* holds; False after *timeout* seconds."""
    with cv:
        return cv.wait_for(cond, timeout)
