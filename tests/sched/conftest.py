"""Fixtures for the controlled-scheduling tests; the scenarios they use are in sched_helpers.py
(imported here too, so their kinds are registered for replay tokens)."""

from __future__ import annotations

import threading
from typing import Iterator

import pytest

import sched_helpers  # noqa: F401  (registers the planted-deadlock and lock-order kinds)
from mmlab.clock import hooks


@pytest.fixture
def no_leaked_threads() -> Iterator[None]:
    """Every task thread an exploration starts is joined by the time it returns."""
    before = set(threading.enumerate())
    yield
    assert hooks.schedule_point is None, "a controlled execution left its hook installed"
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not left, f"threads left running: {left}"
