"""Two v6.18 lock protocols the real kernel's mmap_lock events showed (`mmlab conform`):
madvise(MADV_DONTNEED) inside one vma takes the per-VMA lock and no mmap_lock
(``madvise_vma_lock``), and a shrinking brk() zaps after downgrade_write() (``munmap_downgrade``)."""

from __future__ import annotations

import pytest

from mmlab import MM, MADV_DONTNEED, MAP_ANONYMOUS, MAP_POPULATE, MAP_PRIVATE, PROT_READ, PROT_WRITE

M = 1 << 20


def _locks(mm: MM, fn) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    n0 = len(mm.mmap_sem.history)
    fn()
    return [(r.mode, r.how) for r in list(mm.mmap_sem.history)[n0:]]


@pytest.mark.parametrize("kernel,expect", [("v6.18", []), ("v6.18+madvise_vma_lock=off", [("R", "")]),
                                           ("v6.18+per_vma_lock=off", [("R", "")]), ("v3.9", [("R", "")])])
def test_dontneed_within_one_vma_takes_the_vma_lock_only(kernel: str, expect: list) -> None:
    mm = MM(kernel)
    a = mm.mmap(0, 2 * M, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE)
    assert mm.pt.count_present(a, a + 2 * M) == 512
    assert _locks(mm, lambda: mm.madvise(a, M, MADV_DONTNEED)) == expect
    assert mm.pt.count_present(a, a + 2 * M) == 256  # zapped all the same
    assert mm.vma_locks.mm_lock_seq >= 0 and not mm.mmap_sem.holders


def test_dontneed_over_two_vmas_falls_back_to_mmap_lock() -> None:
    mm = MM("v6.18")
    a = mm.mmap(0, 2 * M, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE)
    mm.mprotect(a + M, M, PROT_READ)  # two vmas now
    assert _locks(mm, lambda: mm.madvise(a, 2 * M, MADV_DONTNEED)) == [("R", "")]
    assert mm.pt.count_present(a, a + 2 * M) == 0


@pytest.mark.parametrize("kernel,expect", [("v6.18", [("W", ""), ("R", "downgrade")]),
                                           ("v6.18+munmap_downgrade=off", [("W", "")]), ("v3.9", [("W", "")])])
def test_brk_shrink_zaps_after_downgrade(kernel: str, expect: list) -> None:
    mm = MM(kernel)
    base = mm.brk(0)
    mm.brk(base + 4 * M)
    assert _locks(mm, lambda: mm.brk(base + M)) == expect
    assert mm.brk(0) == base + M and not mm.mmap_sem.holders and not mm.check_invariants()


@pytest.mark.parametrize("kernel,retakes", [("v6.18", True), ("v6.18+populate_fault_retry=off", False)])
def test_madvise_populate_of_a_cold_file_drops_the_lock_for_each_disk_wait(kernel: str, retakes: bool) -> None:
    from mmlab import MADV_POPULATE_READ, File
    from mmlab.clock import DEFAULT_COSTS
    import dataclasses
    mm = MM(kernel, dataclasses.replace(DEFAULT_COSTS, readahead_pages=256))
    f = File("cold", 4 * M)
    a = mm.mmap(0, 4 * M, PROT_READ, MAP_PRIVATE, f)
    got = _locks(mm, lambda: mm.madvise(a, 4 * M, MADV_POPULATE_READ))
    assert all(mode == "R" for mode, _ in got)
    # 4 MiB in 1 MiB read-ahead windows: at least four disk waits; one hold per wait, then the last
    waits = mm.call_history[-1].io_waits
    assert waits >= 4 if retakes else waits == 0
    assert len(got) == (waits + 1 if retakes else 1)
    assert mm.pt.count_present(a, a + 4 * M) == 1024 and not mm.mmap_sem.holders


@pytest.mark.parametrize("kernel,expect", [("v6.18", [("W", ""), ("R", "populate")]),
                                           ("v6.18+populate_skips_inaccessible=off", [("W", "")])])
def test_mlock_onfault_still_calls_mm_populate(kernel: str, expect: list) -> None:
    from mmlab import MCL_CURRENT, MCL_ONFAULT, MLOCK_ONFAULT
    mm = MM(kernel)
    a = mm.mmap(0, 2 * M, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    assert _locks(mm, lambda: mm.mlock2(a, 2 * M, MLOCK_ONFAULT)) == expect
    assert _locks(mm, lambda: mm.mlockall(MCL_CURRENT | MCL_ONFAULT)) == expect
    assert mm.pt.count_present(a, a + 2 * M) == 0  # on fault: nothing populated


@pytest.mark.parametrize("kernel,first", [("v6.18", [("R", "trylock")]), ("v3.9", [("R", "fault")])])
def test_the_first_write_fault_of_a_fresh_vma_takes_mmap_lock_for_its_anon_vma(kernel: str, first: list) -> None:
    mm = MM(kernel)
    a = mm.mmap(0, M, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    assert _locks(mm, lambda: mm.touch(a, write=True)) == first  # v6.18: vmf_anon_prepare()'s trylock
    later = _locks(mm, lambda: mm.touch(a + 16 * 4096, write=True))
    assert later == ([] if kernel == "v6.18" else [("R", "fault")])  # the per-VMA lock alone


def test_a_failed_anon_vma_trylock_falls_back_to_mmap_lock(threads) -> None:  # type: ignore[no-untyped-def]
    import threading
    mm = MM("v6.18")
    a = mm.mmap(0, M, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    mm.mmap_sem.down_write()  # a writer holds it: the trylock fails, the fault waits under mmap_lock
    done = threading.Event()
    threads.start(lambda: (mm.touch(a, write=True), done.set()), name="faulter")
    from mmlab.locking.watch import wait_until, watch
    cv = watch(mm.mmap_sem)
    assert wait_until(cv, lambda: mm.mmap_sem.is_contended(), 10)
    mm.mmap_sem.up_write()
    threads.join()
    assert done.is_set()
    recs = [(r.mode, r.how) for r in mm.mmap_sem.history if r.task == "faulter"]
    assert recs == [("R", "fault")]
