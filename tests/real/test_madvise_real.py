"""Every madvise advice on every kind of vma, on the real kernel and in the model, side by side:
the result, mincore after it and the number of vmas (4 touched pages, the middle 2 advised), so
the rules of mmlab/mm/madvise.py are checked against this machine's kernel in every run.

Left out: MADV_DONTNEED(_LOCKED) and MADV_GUARD_INSTALL (both zap) of shared anonymous memory,
where mincore reports the shmem page cache that the model does not keep (known difference
shmem-mincore-page-cache)."""

from __future__ import annotations

import errno
import os

import pytest

from mmlab import (MADV_COLD, MADV_DODUMP, MADV_DOFORK, MADV_DONTDUMP, MADV_DONTFORK, MADV_DONTNEED,
                   MADV_DONTNEED_LOCKED, MADV_FREE, MADV_GUARD_INSTALL, MADV_GUARD_REMOVE, MADV_HUGEPAGE,
                   MADV_KEEPONFORK, MADV_MERGEABLE, MADV_NOHUGEPAGE, MADV_PAGEOUT, MADV_REMOVE,
                   MADV_UNMERGEABLE, MADV_WILLNEED, MADV_WIPEONFORK, MAP_ANONYMOUS, MAP_FIXED, MAP_LOCKED,
                   MAP_PRIVATE, MAP_SHARED, MM, PAGE_SIZE, PROT_READ, PROT_WRITE, ZERO_COSTS, File)
from mmlab.real.backend import RealFile, Region

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
ADVICES = [MADV_FREE, MADV_REMOVE, MADV_DONTFORK, MADV_DOFORK, MADV_MERGEABLE, MADV_UNMERGEABLE, MADV_HUGEPAGE,
           MADV_NOHUGEPAGE, MADV_DONTDUMP, MADV_DODUMP, MADV_WIPEONFORK, MADV_KEEPONFORK, MADV_COLD, MADV_PAGEOUT,
           MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_GUARD_INSTALL, MADV_GUARD_REMOVE, MADV_WILLNEED, 0, 1, 2]
KINDS = ["anon", "shanon", "filesh", "filesh_ro", "filepriv", "memfd", "locked"]


def _map(mm, kind: str, a: int, files: dict) -> None:
    if kind == "anon":
        mm.mmap(a, 4 * P, RW, ANON)
    elif kind == "shanon":
        mm.mmap(a, 4 * P, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    elif kind == "filesh":
        mm.mmap(a, 4 * P, RW, MAP_SHARED | MAP_FIXED, files["rw"])
    elif kind == "filesh_ro":
        mm.mmap(a, 4 * P, PROT_READ, MAP_SHARED | MAP_FIXED, files["ro"])
    elif kind == "filepriv":
        mm.mmap(a, 4 * P, RW, MAP_PRIVATE | MAP_FIXED, files["rw"], 8 * P)
    elif kind == "memfd":
        mm.mmap(a, 4 * P, RW, MAP_SHARED | MAP_FIXED, files["memfd"])
    else:
        mm.mmap(a, 4 * P, RW, ANON | MAP_LOCKED)
    for i in range(4):
        mm.touch(a + i * P, write=kind != "filesh_ro")


def _one(mm, a: int, kind: str, advice: int, files: dict) -> tuple:
    _map(mm, kind, a, files)
    try:
        mm.madvise(a + P, 2 * P, advice)
        r = "ok"
    except OSError as e:
        r = errno.errorcode[e.errno]
    n = len([v for v in mm.maps(a, a + 4 * P) if v.start < a + 4 * P and v.end > a]) \
        if not isinstance(mm, MM) else len([v for v in mm.maps() if v.start < a + 4 * P and v.end > a])
    out = (r, mm.mincore(a, 4 * P), n)
    mm.munmap(a, 4 * P)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_every_advice_agrees_with_the_real_kernel(kind: str, tmp_path, can_mlock: None) -> None:
    mfd = os.memfd_create("mmlab-madvise")
    os.ftruncate(mfd, 16 * P)
    try:
        with RealFile(str(tmp_path / "rw"), 16 * P) as rw, Region(8 * P, keep_reserved=False) as reg:
            ro = os.open(str(tmp_path / "rw"), os.O_RDONLY)
            try:
                real = [_one(reg.mm, reg.base, kind, adv, {"rw": rw, "ro": ro, "memfd": mfd}) for adv in ADVICES]
            finally:
                os.close(ro)
    finally:
        os.close(mfd)
    mm = MM("v6.18", ZERO_COSTS)
    files = {"rw": File("rw", 16 * P, cached=True), "memfd": File("memfd", 16 * P, tmpfs=True)}
    files["ro"] = File("rw", 16 * P, mode="r", cached=True)  # a read-only fd of a file of its own
    base = mm.mmap(0, 8 * P, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS)
    mm.munmap(base, 8 * P)
    model = [_one(mm, base, kind, adv, files) for adv in ADVICES]
    for adv, r, m in zip(ADVICES, real, model):
        if kind == "shanon" and adv in (MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_GUARD_INSTALL):
            continue  # shmem-mincore-page-cache: the zapped pages stay in the shmem object
        assert r == m, f"{kind} advice {adv}: real {r} model {m}"
