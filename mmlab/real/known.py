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
def _file_fault_around(field: str, o: "Op", real: "Obs", model: "Obs") -> bool:
    """A read fault on a file mapping maps more than the faulting page: do_fault_around() maps
    the cached pages of the fault-around window (fault_around_bytes), and finish_fault() maps
    every page of a large folio that fits in the vma -- and which folio sizes ext4 read-ahead
    made is not something the model knows. So Linux may have more ptes present (and, in a
    VM_LOCKED vma, more Locked kB, since Locked counts the mapped pages) than the model.
    Excused page by page: the layouts agree, the vma maps a file, the page is in the page cache
    on both sides (mincore 1 on both: the model's page cache agrees), Linux has the pte and the
    model not; never the other way round. For ``locked``: per vma, the Locked kB the real side
    has more equals 4 kB times such pages, and the ``lo`` flags and the lo sum agree."""
    if field not in ("pte", "locked") or real.layout != model.layout or real.pte is None or model.pte is None:
        return False
    extra = []
    for (s, e, perms, *file), rm, mm_, rp, mp in zip(real.layout, real.mincore, model.mincore, real.pte, model.pte):
        n = 0
        for i, (r, m) in enumerate(zip(rp, mp)):
            if r == m:
                continue
            if not file or r != 1 or m != 0 or rm[i] != 1 or mm_[i] != 1:
                return False
            n += 1
        extra.append(n)
    if field == "pte":
        return any(extra)
    # Locked counts the mapped pages of a VM_LOCKED vma, each as 4 kB / its mapcount (PSS): a
    # vma with n extra ptes has up to 4n kB more; a locked file vma whose pages fault-around
    # mapped a second time elsewhere has less
    (rl, rsum), (ml, msum) = real.locked, model.locked
    if rsum != msum or len(rl) != len(ml):
        return False
    for (rk, rlo), (mk, mlo), n, (s, e, perms, *file) in zip(rl, ml, extra, real.layout):
        if rlo != mlo:
            return False
        if rk != mk and not (rlo and file and (0 < rk - mk <= 4 * n or (rk < mk and any(extra)))):
            return False
    return any(extra)


KNOWN: list[KnownDifference] = [
    KnownDifference(
        "file-fault-around",
        "a read fault on a file mapping maps the cached pages around it",
        "A read fault on a file mapping maps more than the faulting page: do_fault_around() maps the "
        "cached pages of the fault_around_bytes window, and finish_fault() maps each page of a large "
        "folio that fits in the vma; the folio sizes come from ext4's read-ahead, which the model does "
        "not model. The model maps the faulting page; the page cache (mincore) agrees.",
        explains_obs=_file_fault_around),
]


def by_name(name: str) -> KnownDifference:
    for k in KNOWN:
        if k.name == name:
            return k
    raise KeyError(name)
