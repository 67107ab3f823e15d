"""`mmlab diff`: a small run agrees, a planted disagreement is found and shrunk to a snippet."""

from __future__ import annotations

import os
import random
import subprocess
import sys

from mmlab import (MADV_DONTNEED, MAP_ANONYMOUS, MAP_FIXED, MAP_POPULATE, MAP_PRIVATE, MAP_SHARED, MCL_FUTURE,
                   PAGE_SIZE, PROT_READ, PROT_WRITE)
from mmlab.cli import main
from mmlab.real import diff as D

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


def _planted() -> list[D.Op]:
    """Noise around the two calls that disagree once the documented differences are ignored:
    MADV_DONTNEED of shared anonymous memory leaves its page in the shmem object, which Linux's
    mincore reports and the model's does not."""
    noise = [D.op("touch", off=9 * P, write=1), D.op("mmap", off=12 * P, len=2 * P, prot=RW,
             flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, hint=0), D.op("munmap", off=13 * P, len=P),
             D.op("mlockall", flags=0)]
    return [noise[0], noise[1], D.op("mmap", off=2 * P, len=P, prot=RW,
                                     flags=MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED | MAP_POPULATE, hint=0),
            noise[2], noise[3], D.op("madvise", off=2 * P, len=P, advice=MADV_DONTNEED),
            D.op("touch", off=9 * P, write=0)]


def test_documented_difference_is_excused_by_name_and_only_by_its_check(can_mlock: None) -> None:
    ops = _planted()
    with_known = D.run_case(ops)
    assert with_known.agree and (5, "shmem-mincore-page-cache") in with_known.explained
    without = D.run_case(ops, known=[])
    assert not without.agree and without.mismatch.step == 5 and "mincore" in without.mismatch.fields


def test_shrinker_finds_the_two_calls_and_prints_a_runnable_snippet(can_mlock: None, tmp_path) -> None:
    ops = _planted()
    small = D.shrink(ops, lambda o: D.fails(o, known=[]))
    assert [o.name for o in small] == ["mmap", "madvise"]
    assert small[1].arg("len") == P
    code = D.snippet(small)
    f = tmp_path / "snippet.py"
    f.write_text(code)
    out = subprocess.run([sys.executable, str(f)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, out.stderr
    assert "disagree" in out.stdout and "step 1:" in out.stdout


def test_mlockall_future_is_undone_after_each_case(can_mlock: None) -> None:
    from mmlab.real.procfs import read_vm_lck_kb
    before = read_vm_lck_kb()
    r = D.run_case([D.op("mlockall", flags=MCL_FUTURE),
                    D.op("mmap", off=0, len=2 * P, prot=RW, flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, hint=0)])
    assert r.agree
    assert read_vm_lck_kb() == before
