"""The scheduler's model of mmap_sem follows readerwriterlock.RWLockFairD's rules."""

from __future__ import annotations

import random

from readerwriterlock.rwlock import RWLockFairD

from mmlab.sched.lockmodel import RwsemModel


def test_a_queued_writer_blocks_new_readers() -> None:
    m = RwsemModel("mmap_sem")
    r1 = m.request(0, "R")
    assert r1.ready() and r1.take()
    w = m.request(1, "W")
    assert w.ready() and not w.take(), "readers hold it: the writer joins the wait list"
    assert w.queued and not w.ready()
    r2 = m.request(2, "R")
    assert not r2.fast_path(), "a reader arriving after a queued writer must wait (fairness)"
    assert not r2.take() and r2.queued
    m.release(0, "R")
    assert w.ready() and not r2.ready(), "FIFO: the writer first"
    assert w.take() and m.holds(1) == "W"
    assert not r2.ready()
    m.release(1, "W")
    assert r2.ready() and r2.take() and not m.queue


def test_readers_at_the_head_go_in_together_and_downgrade_lets_them() -> None:
    m = RwsemModel("mmap_sem")
    w1 = m.request(0, "W")
    assert w1.take()
    waits = [m.request(t, "R") for t in (1, 2)] + [m.request(3, "W")]
    for x in waits:
        assert not x.take()
    m.downgrade(0)  # the writer becomes a reader: the readers at the head may come in
    assert m.holds(0) == "R"
    assert waits[0].ready() and not waits[1].ready()  # one head at a time...
    assert waits[0].take() and waits[1].ready() and waits[1].take()  # ...then the next
    assert not waits[2].ready(), "a writer at the head waits for three read holds"
    for t in (0, 1, 2):
        m.release(t, "R")
    assert waits[2].ready() and waits[2].take() and m.holds(3) == "W"


def test_a_retake_queues_behind_a_waiting_writer() -> None:
    """The bounded populate drops the read lock for a waiting writer; taking it again must not
    jump ahead of that writer."""
    m = RwsemModel("mmap_sem")
    pop = m.request(0, "R")
    assert pop.take()
    w = m.request(1, "W")
    assert not w.take()
    m.release(0, "R")  # the populate yields...
    again = m.request(0, "R")
    assert not again.take(), "...and its re-take queues behind the writer"
    assert w.ready() and w.take()


def test_trylock_fails_behind_a_queued_writer() -> None:
    m = RwsemModel("mmap_sem")
    assert m.trylock_read(0)
    w = m.request(1, "W")
    assert not w.take()
    assert not m.trylock_read(2)


def test_model_grants_only_what_the_real_lock_grants(seed: int) -> None:
    """Differential: drive the model and a real RWLockFairD with the same random operations from
    one thread; whenever the model grants, the real non-blocking acquire must succeed (what lets
    controlled mode never block in the real lock)."""
    rng = random.Random(seed)
    grants = writers = 0
    for _ in range(30):
        real = RWLockFairD()
        m = RwsemModel("mmap_sem")
        held: dict[int, list] = {}  # task -> real handles, in order
        waits: dict[int, object] = {}
        for _ in range(60):
            t = rng.randrange(4)
            if t in waits:
                w = waits[t]
                if w.ready() and w.take():  # type: ignore[attr-defined]
                    h = real.gen_wlock() if w.mode == "W" else real.gen_rlock()  # type: ignore[attr-defined]
                    assert h.acquire(blocking=False), f"model granted {w.mode} to {t}, the real lock refused"  # type: ignore[attr-defined]
                    held.setdefault(t, []).append((w.mode, h))  # type: ignore[attr-defined]
                    grants += 1
                    writers += w.mode == "W"  # type: ignore[attr-defined]
                    del waits[t]
            elif held.get(t) and rng.random() < 0.5:
                mode, h = held[t].pop()
                h.release()
                m.release(t, mode)
            elif not held.get(t):
                waits[t] = m.request(t, rng.choice("RW"))
    assert grants > 100 and writers > 10, (grants, writers)  # the comparison was exercised


def test_a_writer_asking_again_waits_for_itself() -> None:
    m = RwsemModel("mmap_sem")
    w = m.request(0, "W")
    assert w.take()
    again = m.request(0, "W")
    assert not again.take() and not again.ready(), "it waits for its own write hold: forever"
