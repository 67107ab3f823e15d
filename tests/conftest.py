"""Shared fixtures: a fresh model per test, threads that are always joined, printed seeds."""

from __future__ import annotations

import os
import random
import sys
import threading
from typing import Callable, Iterator

import pytest

from mmlab import MM, ZERO_COSTS, KERNELS

ALL_KERNELS = list(KERNELS)


@pytest.fixture(autouse=True, scope="session")
def _switch_interval() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    yield
    sys.setswitchinterval(old)


@pytest.fixture(autouse=True)
def _no_user_cost_profile(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands resolve a cost profile from $MMLAB_COSTS or ~/.config/mmlab/costs.toml: tests see
    neither the user's profile nor ever write there -- an empty config home of their own."""
    monkeypatch.delenv("MMLAB_COSTS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config-home")))


@pytest.fixture
def mm() -> MM:
    """A v6.18 model with zero costs."""
    return MM("v6.18", ZERO_COSTS)


@pytest.fixture(params=ALL_KERNELS)
def kmm(request: pytest.FixtureRequest) -> MM:
    """A zero-cost model for every kernel profile."""
    return MM(request.param, ZERO_COSTS)


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """A seed for this test's random choices; printed in the report when the test fails."""
    s = int(os.environ.get("MMLAB_SEED", random.randrange(1 << 31)))
    request.node.user_properties.append(("seed", s))
    print(f"seed={s}")
    return s


class ThreadGroup:
    """Start threads that are joined at teardown; their exceptions fail the test."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self, fn: Callable[[], object], name: str = "") -> threading.Thread:
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported at join
                self.errors.append(e)

        t = threading.Thread(target=run, name=name or fn.__name__, daemon=True)
        self.threads.append(t)
        t.start()
        return t

    def join(self, timeout: float = 60) -> None:
        for t in self.threads:
            t.join(timeout)
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"threads still running: {alive}"
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def threads() -> Iterator[ThreadGroup]:
    g = ThreadGroup()
    yield g
    g.join()
