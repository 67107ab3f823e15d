"""Tests of mmlab.trace: those that need tracefs take the ``tracing`` fixture, which skips with
unavailable_reason()'s one line where tracing cannot run; each checks that it left no instance."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Iterator

import pytest

from mmlab.trace import instances_of_mine, unavailable_reason
from mmlab.trace.tracefs import instance_pid


@pytest.fixture
def tracing() -> Iterator[None]:
    why = unavailable_reason()
    if why:
        pytest.skip(why)
    before = set(instances_of_mine())
    yield
    # This worker's own, and those of processes that are gone (an `mmlab trace` the test ran).
    left = [n for n in set(instances_of_mine()) - before
            if instance_pid(n) is not None and (instance_pid(n) == os.getpid() or not os.path.exists(f"/proc/{instance_pid(n)}"))]
    assert not left, f"tracing instances left behind: {left}"


@pytest.fixture
def libc():  # type: ignore[no-untyped-def]
    from mmlab.real.libc import libc as get, unavailable_reason as why
    w = why()
    if w:
        pytest.skip(w)
    return get()


@pytest.fixture(scope="session")
def prog(tmp_path_factory: pytest.TempPathFactory) -> str:
    """progs/populate_vs_mmap.c, a two-thread program written without mmlab, built with gcc."""
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed: cannot build the two-thread C program")
    out = str(tmp_path_factory.mktemp("prog") / "populate_vs_mmap")
    src = os.path.join(os.path.dirname(__file__), "progs", "populate_vs_mmap.c")
    subprocess.run(["gcc", "-O2", "-pthread", "-o", out, src], check=True, capture_output=True)
    return out
