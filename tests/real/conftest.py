"""Tests of the real-kernel backend (skipped with the reason where it cannot run: tests/conftest.py)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def can_mlock() -> None:
    """Skip when the kernel would refuse mlock/MAP_LOCKED/mlockall to this user."""
    if os.geteuid() != 0:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        if soft != resource.RLIM_INFINITY and soft < (64 << 20):
            pytest.skip(f"locking memory needs CAP_IPC_LOCK or a large RLIMIT_MEMLOCK (this user has {soft} bytes)")
