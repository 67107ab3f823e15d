"""The ``vma-writer`` victim (mmlab/harness/victims.py): a writer whose range overlaps the
populate. Under bounded's per-VMA-lock populate it is the writer that still waits (a batch), and
while it waits it holds mmap_sem for write, so the writer elsewhere queues behind it; under v6.18
it waits out the whole populate."""

from __future__ import annotations

import pytest

from mmlab import DEFAULT_COSTS
from mmlab.harness.dilation import choose_dilation
from mmlab.harness.latency import LatencyConfig, RunResult, run_one
from mmlab.harness.populators import POPULATORS
from mmlab.kernels import get_kernel

pytestmark = pytest.mark.timeout(120)

SIZE = 32 << 20  # 8,192 pages: 13 ms of modelled zeroing, 16 batches of 512 pages (0.82 ms each)
BATCH_MS = 512 * DEFAULT_COSTS.anon_page_ns / 1e6
POPULATE_MS = SIZE // 4096 * DEFAULT_COSTS.anon_page_ns / 1e6


def _run(kernel: str, victims: tuple[str, ...], seed: int) -> RunResult:
    k = get_kernel(kernel)
    cfg = LatencyConfig([k], [POPULATORS["populate-anon"]], [SIZE], costs=DEFAULT_COSTS, seed=seed, stall_ms=1e9,
                        victims=victims, dilation=choose_dilation(DEFAULT_COSTS, k=16.0))
    r = run_one(k, cfg.populators[0], SIZE, cfg, seed)
    assert r.reason == "done" and not r.errors, r.errors
    return r


def _worst_ms(r: RunResult, op: str) -> float:
    w = r.worst_wait_us(op)
    assert w is not None, f"{op} never ran inside the populate: {sorted(r.victim)}"
    return w / 1e3


def test_bounded_makes_the_writer_on_its_vma_wait_a_batch_and_v618_the_whole_populate(seed: int) -> None:
    b = _run("bounded", ("writer", "vma-writer"), seed)
    assert r_count(b, "vma-mprotect") >= 4  # it ran against the populate in progress
    # and its calls met a mapped range: an ENOMEM (the populate's range gone) is an error of the op
    assert int(b.victim["vma-mprotect"]["errors"]) <= r_count(b, "vma-mprotect") // 4, b.victim["vma-mprotect"]  # type: ignore[call-overload]
    assert 0.3 * BATCH_MS < _worst_ms(b, "vma-mprotect") < 3 * BATCH_MS, b.victim["vma-mprotect"]
    v = _run("v6.18", ("writer", "vma-writer"), seed)
    assert _worst_ms(v, "vma-mprotect") > 0.5 * POPULATE_MS, v.victim["vma-mprotect"]


def test_the_writer_elsewhere_waits_only_behind_the_writer_on_the_vma(seed: int) -> None:
    """populate_vma_lock: alone, a writer elsewhere never waits for the populate; beside the
    vma-writer it queues behind that writer's mmap_sem write hold, which waits a batch."""
    alone = _run("bounded", ("writer",), seed)
    assert _worst_ms(alone, "writer") < 0.1 * BATCH_MS, alone.victim["writer"]
    convoy = _run("bounded", ("writer", "vma-writer"), seed)
    assert _worst_ms(convoy, "writer") > 0.3 * BATCH_MS, convoy.victim["writer"]


def r_count(r: RunResult, op: str) -> int:
    return int(r.victim.get(op, {}).get("count", 0))  # type: ignore[arg-type, union-attr]
