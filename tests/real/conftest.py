"""Tests of the real-kernel backend: skipped, with the reason, where it cannot run."""

from __future__ import annotations

import os

import pytest

from mmlab.real.libc import unavailable_reason

_why = unavailable_reason()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.real)
            if _why:
                item.add_marker(pytest.mark.skip(reason=_why))


@pytest.fixture
def can_mlock() -> None:
    """Skip when the kernel would refuse mlock/MAP_LOCKED/mlockall to this user."""
    if os.geteuid() != 0:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        if soft != resource.RLIM_INFINITY and soft < (64 << 20):
            pytest.skip(f"locking memory needs CAP_IPC_LOCK or a large RLIMIT_MEMLOCK (this user has {soft} bytes)")
