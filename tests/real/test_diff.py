"""`mmlab diff`: a small run agrees, a planted disagreement is found and shrunk to a snippet."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys

from mmlab import (MADV_DONTNEED, MADV_POPULATE_READ, MAP_ANONYMOUS, MAP_FIXED, MAP_LOCKED, MAP_POPULATE, MAP_PRIVATE,
                   MAP_SHARED, MCL_FUTURE, PAGE_SIZE, PROT_READ, PROT_WRITE)
from mmlab.cli import main
from mmlab.kernels import get_kernel
from mmlab.real import diff as D
from mmlab.real.known import KnownDifference

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
SEED = 11  # fixed, so a failure here is a reproducible model/kernel disagreement: mmlab diff --seed 11


def test_small_random_run_agrees(can_mlock: None) -> None:
    skip = frozenset(D.model_ops_missing())
    print(f"seed={SEED}")
    for c in range(25):
        rng = random.Random(f"{SEED}:{c}")
        ops = D.generate_case(rng, rng.randint(3, 8), skip=skip)
        r = D.run_case(ops)
        assert r.agree, f"case {c}:\n" + "\n".join(o.source() for o in ops) + "\n" + r.mismatch.describe()


def test_cli_exit_status_and_bad_arguments(can_mlock: None) -> None:
    assert main(["diff", "--cases", "4", "--seed", str(SEED)]) == 0
    assert main(["diff", "--steps", "9-2"]) == 2
    assert main(["diff", "--kernel", "v9.9"]) == 2


def _extra_file_ptes(field: str, o: D.Op, real: D.Obs, model: D.Obs) -> bool:
    """A planted documented difference for these tests (known.py is empty): a model without
    fault-around has fewer ptes after a read fault on a file vma than Linux. (The excuse
    mmlab/real/known.py had for this before the model did fault-around.)
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


def _planted() -> list[D.Op]:
    """Noise around the two calls that disagree on a model without fault-around: a read fault on
    a cold file mapping, after which Linux has more ptes present."""
    noise = [D.op("touch", off=9 * P, write=1), D.op("mmap", off=12 * P, len=2 * P, prot=RW,
             flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, hint=0), D.op("munmap", off=13 * P, len=P),
             D.op("mlockall", flags=0)]
    return [noise[0], noise[1], D.op("mmap", off=2 * P, len=4 * P, prot=PROT_READ,
                                     flags=MAP_SHARED | MAP_FIXED, hint=0, file=1, foff=0),
            noise[2], noise[3], D.op("touch", off=3 * P, write=0), D.op("touch", off=9 * P, write=0)]


NO_FAULT_AROUND = dataclasses.replace(get_kernel("v6.18"), name="v6.18-no-fault-around", fault_around_pages=0)
PLANTED = KnownDifference("planted-extra-file-ptes", "extra ptes after a file read fault",
                          "planted for the tests", explains_obs=_extra_file_ptes)


def test_documented_difference_is_excused_by_name_and_only_by_its_check(can_mlock: None) -> None:
    """A model without fault-around differs from Linux after a read fault on a file vma: a
    documented difference with its own check excuses that (counted by name), nothing else does."""
    ops = _planted()
    with_known = D.run_case(ops, known=[PLANTED], kernel=NO_FAULT_AROUND)
    assert with_known.agree and (5, "planted-extra-file-ptes") in with_known.explained
    without = D.run_case(ops, known=[], kernel=NO_FAULT_AROUND)
    assert not without.agree and without.mismatch.step == 5 and "pte" in without.mismatch.fields
    assert D.run_case(ops, known=[]).agree  # the v6.18 model does fault-around


def test_shrinker_finds_the_two_calls_and_prints_a_runnable_snippet(can_mlock: None, tmp_path) -> None:
    """MADV_POPULATE_READ is 5.14+: the v3.9 model refuses what this kernel does; the shrinker
    drops the noise and the snippet shows the disagreement on v3.9."""
    ops = [D.op("touch", off=9 * P, write=1),
           D.op("mmap", off=2 * P, len=2 * P, prot=RW, flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, hint=0),
           D.op("mmap", off=12 * P, len=P, prot=RW, flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, hint=0),
           D.op("madvise", off=2 * P, len=2 * P, advice=MADV_POPULATE_READ)]
    small = D.shrink(ops, lambda o: not D.run_case(o, known=[], kernel="v3.9").agree)
    assert len(small) <= 2 and small[-1].name == "madvise"  # alone, it is EINVAL vs ENOMEM
    code = D.snippet(small, kernel="v3.9")
    f = tmp_path / "snippet.py"
    f.write_text(code)
    out = subprocess.run([sys.executable, str(f)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, out.stderr
    assert "disagree" in out.stdout and f"step {len(small) - 1}:" in out.stdout


def test_mlockall_future_is_undone_after_each_case(can_mlock: None) -> None:
    from mmlab.real.procfs import read_vm_lck_kb
    before = read_vm_lck_kb()
    r = D.run_case([D.op("mlockall", flags=MCL_FUTURE),
                    D.op("mmap", off=0, len=2 * P, prot=RW, flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, hint=0)])
    assert r.agree
    assert read_vm_lck_kb() == before


def test_lock_state_is_compared_against_the_models_locked_vm(can_mlock: None, monkeypatch) -> None:
    """The model's mm->locked_vm is what the real `lo` vmas are held against: an accounting error
    of 1000 pages in the model is a mismatch on "locked", even with every vma right."""
    ops = [D.op("mmap", off=0, len=2 * P, prot=RW, flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_LOCKED,
                hint=0)]
    assert D.run_case(ops).agree

    class OffBy1000(D.ModelSide):
        def run(self, o: D.Op) -> tuple:
            r = super().run(o)
            self.mm.locked_vm += 1000
            return r
    monkeypatch.setattr(D, "ModelSide", OffBy1000)
    r = D.run_case(ops, known=[])
    assert not r.agree and r.mismatch.fields == ["locked"], r.mismatch and r.mismatch.describe()
    assert r.mismatch.model.locked[1] - r.mismatch.real.locked[1] == 4000  # kB


def test_cases_that_needed_an_excuse_are_not_counted_as_agreeing(can_mlock: None) -> None:
    clean = D.run_case([D.op("mmap", off=0, len=P, prot=RW, flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, hint=0)])
    excused = D.run_case(_planted(), known=[PLANTED], kernel=NO_FAULT_AROUND)
    assert clean.agree and not clean.explained and excused.agree and excused.explained
    assert D.tally([clean, excused, excused]) == {"agree": 1, "excused": 2, "mismatch": 0}


def _v39_disagrees() -> list[D.Op]:
    """MADV_POPULATE_READ is 5.14+: the v3.9 model says EINVAL where this kernel populates; v6.18 agrees."""
    return [D.op("touch", off=9 * P, write=1),
            D.op("mmap", off=2 * P, len=2 * P, prot=RW, flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, hint=0),
            D.op("mmap", off=12 * P, len=P, prot=RW, flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, hint=0),
            D.op("madvise", off=2 * P, len=2 * P, advice=MADV_POPULATE_READ)]


def test_shrinking_and_the_snippet_use_the_kernel_asked_for(can_mlock: None, tmp_path, monkeypatch,
                                                             capsys) -> None:
    ops = _v39_disagrees()
    assert not D.fails(ops) and D.fails(ops, kernel="v3.9")
    monkeypatch.setattr(D, "generate_case", lambda rng, n, pages, skip: list(ops))
    out = tmp_path / "diff.json"
    assert main(["diff", "--kernel", "v3.9", "--cases", "1", "--json", str(out)]) == 1
    capsys.readouterr()
    [shown] = json.loads(out.read_text())["shrunk"]
    # shrunk on v3.9 (on v6.18 no shorter sequence disagrees and all 4 calls would stay)
    assert len(shown["ops"]) <= 2 and "MADV_POPULATE_READ" in shown["ops"][-1], shown["ops"]
    f = tmp_path / "snippet.py"
    f.write_text(shown["snippet"])
    run = subprocess.run([sys.executable, str(f)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert run.returncode == 0, run.stderr
    assert "ModelSide(16, 'v3.9')" in shown["snippet"] and "disagree on ['result'" in run.stdout, run.stdout
