"""The conformance suite: skipped, with the reason, where the real-kernel backend cannot run."""

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
