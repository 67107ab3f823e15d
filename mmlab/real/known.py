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
def _shmem_mincore(field: str, o: "Op", real: "Obs", model: "Obs") -> bool:
    """mincore() of a MAP_SHARED|MAP_ANONYMOUS vma reports the shmem object's page cache, which
    keeps pages after MADV_DONTNEED zapped the ptes; the model has no page cache for anonymous
    shared memory and reports its ptes. Excused page by page: the vma is shared, real mincore
    says 1, the model 0, and the real pte (pagemap) is not present -- as the model says."""
    if field != "mincore" or real.layout != model.layout or real.pte is None:
        return False
    for (s, e, perms), rm, mm_, pte in zip(real.layout, real.mincore, model.mincore, real.pte):
        if rm == mm_:
            continue
        if perms[3] != "s":
            return False
        for r, m, p in zip(rm, mm_, pte):
            if r != m and not (r == 1 and m == 0 and p == 0):
                return False
    return True


KNOWN: list[KnownDifference] = [
    KnownDifference(
        "shmem-mincore-page-cache",
        "mincore of shared anon memory shows the shmem page cache",
        "mincore() on MAP_SHARED|MAP_ANONYMOUS memory reports the shmem page cache, which keeps pages "
        "that MADV_DONTNEED (or a partial munmap) took out of the page table; the model keeps no page "
        "cache for anonymous shared memory and reports its page table, as /proc/self/pagemap does.",
        explains_obs=_shmem_mincore),
]


def by_name(name: str) -> KnownDifference:
    for k in KNOWN:
        if k.name == name:
            return k
    raise KeyError(name)
