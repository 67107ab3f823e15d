"""The scheduler's model of mmap_sem follows readerwriterlock.RWLockFairD's rules."""

from __future__ import annotations

import random

from readerwriterlock.rwlock import RWLockFairD

from mmlab.sched.lockmodel import RwsemModel


def test_a_queued_writer_blocks_new_readers() -> None:
    m = RwsemModel("mmap_sem")
    r1 = m.request(0, "R")
    assert r1.ready() and r1.take()
    w = m.request(1, "W")  # takes the turnstile at once, waits for the reader to drain
    assert m.turnstile == 1 and not w.ready()
    r2 = m.request(2, "R")
    assert not r2.ready(), "a reader arriving after a queued writer must wait (fairness)"
    m.release(0, "R")
    assert w.ready() and not r2.ready()
    assert w.take() and m.holds(1) == "W"
    m.release(1, "W")
    assert r2.ready() and r2.take()


def test_writer_that_finds_readers_takes_the_turnstile_and_waits() -> None:
    m = RwsemModel("mmap_sem")
    w1 = m.request(0, "W")
    assert w1.take()
    w2 = m.request(1, "W")
    r = m.request(2, "R")
    assert not w2.ready() and not r.ready()
    m.downgrade(0)  # the writer becomes a reader and gives the turnstile back
    assert m.holds(0) == "R" and m.turnstile is None
    assert w2.ready() and r.ready()  # both may go for the turnstile: the scheduler picks
    assert r.take()
    assert w2.ready()
    assert not w2.take(), "a writer that got the turnstile still waits for two readers"
    assert m.turnstile == 1 and not w2.ready()
    m.release(0, "R")
    m.release(2, "R")
    assert w2.ready() and w2.take() and m.holds(1) == "W"


def test_trylock_fails_behind_a_queued_writer() -> None:
    m = RwsemModel("mmap_sem")
    assert m.trylock_read(0)
    m.request(1, "W")
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
                if w.ready():  # type: ignore[attr-defined]
                    if w.take():  # type: ignore[attr-defined]
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
            elif not held.get(t) or held[t][-1][0] == "R":
                waits[t] = m.request(t, rng.choice("RW") if not held.get(t) else "R")
    assert grants > 100 and writers > 10, (grants, writers)  # the comparison was exercised


def test_a_writer_asking_again_waits_for_itself() -> None:
    m = RwsemModel("mmap_sem")
    w = m.request(0, "W")
    assert w.immediate and w.take()
    again = m.request(0, "W")
    assert not again.immediate and not again.ready(), "the turnstile is its own: it never frees"
