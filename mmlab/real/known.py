"""The documented differences between the model and the real kernel: the one place they live.

`mmlab diff` compares the model with the real kernel after every call. Where they differ on
purpose, the difference is listed here with its reason, and it is excused only when its own
check shows that it, and nothing else, explains what was seen:

* an *observation* difference (``explains_obs``) says why one observed field differs, and checks
  every differing page or vma against that reason;
* a *state* difference (``model_action``) gives what the model would have to do to behave like
  Linux for that call; the diff replays the case on a fresh model with that action instead, and
  the difference is excused only if that model then agrees with the real kernel on everything.

Each is counted by name in the report, never skipped silently, and each has a test in
tests/real/test_known.py that shows the real kernel really behaves so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

from mmlab.flags import PAGE_SIZE

if TYPE_CHECKING:
    from mmlab.real.diff import ModelSide, Obs, Op

__all__ = ["KnownDifference", "KNOWN", "by_name"]

P = PAGE_SIZE


@dataclass(frozen=True)
class KnownDifference:
    name: str
    short: str
    reason: str
    explains_obs: Optional[Callable[[str, "Op", "Obs", "Obs"], bool]] = None
    model_action: Optional[Callable[["Op", "ModelSide", tuple, tuple], Optional[Callable[["ModelSide"], tuple]]]] = None


# --------------------------------------------------------------------------- observations
# Empty: every difference mmlab diff met is modelled now (the last ones: the shmem page cache of
# shared anonymous memory, partial application, madvise around holes, fault-around). A new entry
# needs its reason, its own check, and a test in tests/real/test_known.py.
KNOWN: list[KnownDifference] = []


def by_name(name: str) -> KnownDifference:
    for k in KNOWN:
        if k.name == name:
            return k
    raise KeyError(name)
