"""One race round: a populator thread and a racer thread on a fresh MM, then the oracle.

A round: the populator task prepares its range (populators.py), the racer task prepares (a donor
for mremap-fixed), both meet at a barrier, the populator makes its populating call while the
racer waits a seeded random delay in [0, window) and fires. Both are joined, the model is
captured and judged. The round also reports the evidence that it tested something:

* ``overlap``    -- a racer call started before the populating call returned;
* ``window_hit`` -- a racer call took mmap_sem for write between the populating call's last
  up_write() and its populate's last up_read(): it ran inside the populate window, which only exists on
  profiles that populate after dropping the write lock (and is wide where the populate drops
  the read lock at disk waits).

``window`` is calibrated per (kernel, populator) by :func:`calibrate`: the duration of the
populating call without a racer. Delays go through the model's clock (``clock.wait``), so a
virtual clock advances instead of sleeping.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Optional, Union

from mmlab.clock import DEFAULT_COSTS, Costs
from mmlab.current import set_task_name
from mmlab.harness.live import LiveChecker, LiveResult, merge_live
from mmlab.harness.oracle import CallView, Snapshot, Verdict, capture, judge
from mmlab.harness.populators import Populator
from mmlab.harness.racers import Racer
from mmlab.kernels import Kernel, get_kernel
from mmlab.mm.mm_struct import MM

__all__ = ["RoundResult", "RoundHang", "run_round", "calibrate", "Aim", "CellResult", "run_cell", "round_seed", "window_evidence"]

POPULATOR_TASK = "populator"
RACER_TASK = "racer"


class RoundHang(RuntimeError):
    """A round's task did not finish within the join limit (a deadlock or a lost wakeup)."""

    def __init__(self, msg: str, stacks: str, lock_state: dict) -> None:
        super().__init__(msg)
        self.stacks = stacks
        self.lock_state = lock_state


@dataclass
class RoundResult:
    kernel: str
    populator: str
    racer: str
    seed: int
    delay_ns: int
    verdict: Verdict
    overlap: bool = False
    window_hit: bool = False
    populate_ns: int = 0
    calls: int = 0
    errors: list[str] = field(default_factory=list)
    live: Optional[LiveResult] = None  # the live checker's record (--check-live), merged into verdict
    final_outcome: str = ""  # the outcome of the after-the-round check alone

    @property
    def outcome(self) -> str:
        return self.verdict.outcome

    @property
    def live_only(self) -> bool:
        """FORBIDDEN seen only by the live checker: a later call erased it before the round ended."""
        return self.live is not None and self.live.first is not None and self.final_outcome != "FORBIDDEN"


def round_seed(seed: int, kernel: str, populator: str, racer: str, i: int) -> int:
    """The seed of round *i* of a cell: stable across runs and independent of other cells."""
    return random.Random(f"{seed}/{kernel}/{populator}/{racer}/{i}").getrandbits(32)


AIM = 0.9  # the racer aims at the first 90% of the call: a shot after its end tests nothing


class Aim:
    """Where the racer aims, LTP fuzzy-sync style: AIM x an exponential moving average of the
    populating call's duration, seeded by :func:`calibrate` and updated from every round, so a
    calibration taken while the machine was busy corrects itself within a few rounds."""

    def __init__(self, duration_ns: int) -> None:
        self.avg = float(max(1, duration_ns))

    @property
    def window_ns(self) -> int:
        return max(1, int(self.avg * AIM))

    def update(self, populate_ns: int) -> None:
        if populate_ns > 0:
            self.avg = 0.7 * self.avg + 0.3 * populate_ns


def calibrate(kernel: Union[str, Kernel], pop: Populator, size: int, costs: Costs = DEFAULT_COSTS,
              rounds: int = 2) -> int:
    """The populating call's duration in ns without a racer (the shortest of *rounds*)."""
    best = None
    for _ in range(rounds):
        res = {}

        def body() -> None:
            set_task_name(POPULATOR_TASK)
            mm = MM(kernel, costs)
            st = pop.setup(mm, size)
            pop.populate(mm, st)
            c = _last_call(mm.call_history, POPULATOR_TASK)
            res["ns"] = (c.t_end - c.t_start) if c is not None else 0
        t = threading.Thread(target=body, name="calibrate")
        t.start()
        t.join()
        ns = res.get("ns", 0)
        best = ns if best is None else min(best, ns)
    return max(1, best or 1)


def _last_call(history, task: str):
    for c in reversed(history):
        if c.task == task:
            return c
    return None


def run_round(kernel: Union[str, Kernel], pop: Populator, racer: Optional[Racer], *, seed: int,
              size: int, window_ns: int, costs: Costs = DEFAULT_COSTS, join_s: float = 60.0,
              check_live_ms: float = 0.0) -> RoundResult:
    """Run one round and judge it. *window_ns*: the racer fires uniformly in [0, window_ns)
    after the populating call is started. *check_live_ms* > 0 runs the oracle every that many ms
    under mmap_sem for read while the tasks run (live.py); its first FORBIDDEN joins the verdict.
    Raises RoundHang if a task never finishes."""
    k = get_kernel(kernel)
    rng = random.Random(seed)
    delay = int(rng.random() * window_ns)
    mm = MM(k, costs)
    ready = threading.Barrier(2 if racer else 1)
    shared: dict = {}
    errors: list[str] = []
    failures: list[BaseException] = []

    def populator_task() -> None:
        set_task_name(POPULATOR_TASK)
        try:
            st = pop.setup(mm, size)
            shared["st"] = st
            st_ready.set()
            ready.wait()
            try:
                pop.populate(mm, st)
            except OSError as e:  # recorded in the call history; the oracle judges the model
                errors.append(f"populator: {e}")
        except threading.BrokenBarrierError:
            pass
        except BaseException as e:  # noqa: BLE001 - a harness or model bug: reported by the round
            failures.append(e)
            ready.abort()
        finally:
            st_ready.set()

    def racer_task() -> None:
        set_task_name(RACER_TASK)
        assert racer is not None
        try:
            # the populator's setup runs first: the racer needs the target range
            st_ready.wait()
            if "st" not in shared:
                return
            st = shared["st"]
            prepared = racer.prepare(mm, pop, st, rng)
            ready.wait()
            mm.clock.wait(delay, "racer delay")
            shared["fire_ns"] = mm.clock.now_ns()
            try:
                racer.fire(mm, st, prepared)
            except OSError as e:
                errors.append(f"racer: {e}")
        except threading.BrokenBarrierError:
            pass
        except BaseException as e:  # noqa: BLE001
            failures.append(e)
            ready.abort()

    st_ready = threading.Event()
    tp = threading.Thread(target=populator_task, name=POPULATOR_TASK, daemon=True)
    tr = threading.Thread(target=racer_task, name=RACER_TASK, daemon=True) if racer else None
    checker = LiveChecker(mm, check_live_ms) if check_live_ms > 0 else None
    if checker is not None:
        checker.start()
    try:
        tp.start()
        if tr is not None:
            tr.start()
        for t in (tp, tr):
            if t is not None:
                t.join(join_s)
    finally:
        live = checker.stop() if checker is not None else None
    alive = [t for t in (tp, tr) if t is not None and t.is_alive()]
    if alive:
        raise RoundHang(f"round hung: {', '.join(t.name for t in alive)} still running after {join_s:.0f} s "
                        f"(kernel {k.name}, populator {pop.name}, racer {racer.name if racer else '-'}, seed {seed})",
                        _stacks(), mm.mmap_sem.state())
    if failures:
        raise failures[0]
    if live is not None and live.error:
        raise RuntimeError(f"live oracle: {live.error}")
    snap = capture(mm)
    verdict = judge(snap)
    final_outcome = verdict.outcome
    verdict = merge_live(verdict, live)
    res = RoundResult(k.name, pop.name, racer.name if racer else "-", seed, delay, verdict,
                      calls=len(snap.history), errors=errors, live=live, final_outcome=final_outcome)
    pc = _populating_call(snap)
    if pc is not None:
        res.populate_ns = (pc.t_end - pc.t_start) if pc.t_end >= 0 else 0
        res.overlap, res.window_hit = window_evidence(snap, pc, shared.get("fire_ns", -1))
    return res


def _populating_call(snap: Snapshot) -> Optional[CallView]:
    """The populator task's last call: the populating one."""
    for c in reversed(snap.history):
        if c.task == POPULATOR_TASK:
            return c
    return None


def window_evidence(snap: Snapshot, pc: CallView, fire_ns: int = -1, racer_task: str = RACER_TASK) -> tuple[bool, bool]:
    """(overlap, window_hit) of the racer task's calls against the populating call *pc*."""
    rcalls = {c.call_id: c for c in snap.history if c.task == racer_task and c.t_start >= fire_ns}
    if not rcalls:
        return False, False
    overlap = any(c.t_start < pc.t_end for c in rcalls.values())
    own = [r for r in snap.locks if r.call_id == pc.call_id]
    w_end = max((r.rel_ns for r in own if r.mode == "W"), default=-1)
    p_end = max((r.rel_ns for r in own), default=-1)  # the populate's last up_read (or up_write)
    if w_end < 0 or p_end <= w_end:
        return overlap, False
    hit = any(r.mode == "W" and r.call_id in rcalls and w_end <= r.acq_ns < p_end for r in snap.locks)
    return overlap, hit


def _stacks() -> str:
    import sys
    import traceback
    out = []
    names = {t.ident: t.name for t in threading.enumerate()}
    for tid, frame in sys._current_frames().items():
        out.append(f"--- thread {names.get(tid, tid)}")
        out.extend(traceback.format_stack(frame))
    return "".join(s if s.endswith("\n") else s + "\n" for s in out)


@dataclass
class CellResult:
    """All rounds of one kernel x populator x racer cell, jcstress-style counts."""

    kernel: str
    populator: str
    racer: str
    rounds: int = 0
    overlaps: int = 0
    window_hits: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: {"OK": 0, "INTERESTING": 0, "FORBIDDEN": 0})
    wrong_pages: int = 0
    max_wrong_pages: int = 0
    interesting_pages: int = 0
    broken: int = 0
    broken_msg: str = ""
    window_ns: int = 0  # the calibrated duration of the populating call
    elapsed_s: float = 0.0
    calls: int = 0
    kinds: dict[str, int] = field(default_factory=dict)  # finding kind -> rounds it appeared in
    forbidden: list[RoundResult] = field(default_factory=list)  # the first few, with their history
    check_live_ms: float = 0.0  # 0: no live checking
    live_checks: int = 0
    live_forbidden: int = 0  # rounds in which a live check saw FORBIDDEN
    live_only: int = 0  # ... and the after-the-round check did not
    live_hold_ns_max: int = 0
    live_first_ns: list[int] = field(default_factory=list)  # per live-FORBIDDEN round: when it was first seen

    def add(self, r: RoundResult, keep: int) -> None:
        self.rounds += 1
        self.overlaps += r.overlap
        self.window_hits += r.window_hit
        self.outcomes[r.outcome] += 1
        self.wrong_pages += r.verdict.wrong_pages
        self.max_wrong_pages = max(self.max_wrong_pages, r.verdict.wrong_pages)
        self.interesting_pages += r.verdict.pages["INTERESTING"]
        self.calls += r.calls
        for kind in {f.kind for f in r.verdict.findings if f.grade != "OK"}:
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if r.live is not None:
            self.live_checks += r.live.checks
            self.live_hold_ns_max = max(self.live_hold_ns_max, r.live.hold_ns_max)
            if r.live.first is not None:
                self.live_forbidden += 1
                self.live_only += r.live_only
                self.live_first_ns.append(r.live.first.at_ns)
        if r.outcome == "FORBIDDEN" and len(self.forbidden) < keep:
            self.forbidden.append(r)

    def as_dict(self) -> dict[str, object]:
        return {
            "kernel": self.kernel, "populator": self.populator, "racer": self.racer,
            "rounds": self.rounds, "window_hits": self.window_hits, "overlaps": self.overlaps,
            "outcomes": dict(self.outcomes, wrong_pages=self.wrong_pages),
            "wrong_pages": self.wrong_pages, "max_wrong_pages": self.max_wrong_pages,
            "interesting_pages": self.interesting_pages, "finding_kinds": dict(self.kinds), "broken": self.broken, "broken_msg": self.broken_msg,
            "window_ms": round(self.window_ns / 1e6, 3), "elapsed_s": round(self.elapsed_s, 3),
            "forbidden_rounds": [_round_dict(r) for r in self.forbidden],
            "live": self.live_dict(),
        }

    def live_dict(self) -> Optional[dict[str, object]]:
        if not self.check_live_ms:
            return None
        firsts = sorted(self.live_first_ns)
        return {"period_ms": self.check_live_ms, "checks": self.live_checks,
                "forbidden_rounds": self.live_forbidden, "live_only_rounds": self.live_only,
                "hold_ms_max": round(self.live_hold_ns_max / 1e6, 3),
                "first_seen_ms_min": round(firsts[0] / 1e6, 3) if firsts else None,
                "first_seen_ms_median": round(firsts[len(firsts) // 2] / 1e6, 3) if firsts else None}


def _round_dict(r: RoundResult) -> dict[str, object]:
    from mmlab.harness.oracle import format_history
    v = r.verdict
    return {"seed": r.seed, "delay_ns": r.delay_ns, "window_hit": r.window_hit, "wrong_pages": v.wrong_pages,
            "findings": [f.as_dict() for f in v.findings if f.grade != "OK"],
            "history": format_history(v.snapshot) if v.snapshot is not None else [],
            "final_outcome": r.final_outcome,
            "live": r.live.as_dict() if r.live is not None else None}


def run_cell(kernel: Union[str, Kernel], pop: Populator, racer: Racer, *, seed: int, size: int,
             costs: Costs = DEFAULT_COSTS, rounds: int = 0, duration_s: float = 0.0,
             window_ns: int = 0, keep: int = 3, stop: Optional[threading.Event] = None,
             on_round=None, check_live_ms: float = 0.0) -> CellResult:
    """Rounds of one cell: exactly *rounds*, or as many as fit in *duration_s* (at least one).
    A round that raises is counted as broken (the first message kept) and the cell stops."""
    import time
    k = get_kernel(kernel)
    cell = CellResult(k.name, pop.name, racer.name, check_live_ms=check_live_ms)
    t0 = time.monotonic()
    try:
        cell.window_ns = window_ns or calibrate(k, pop, size, costs)
        aim = Aim(cell.window_ns)
    except Exception as e:  # noqa: BLE001 - a populator the model cannot run yet
        cell.broken += 1
        cell.broken_msg = f"calibration: {type(e).__name__}: {e}"
        return cell
    i = 0
    while True:
        if stop is not None and stop.is_set():
            break
        if rounds and i >= rounds:
            break
        if not rounds and i and time.monotonic() - t0 >= duration_s:
            break
        try:
            r = run_round(k, pop, racer, seed=round_seed(seed, k.name, pop.name, racer.name, i), size=size,
                          window_ns=aim.window_ns, costs=costs, check_live_ms=check_live_ms)
        except RoundHang:
            raise
        except Exception as e:  # noqa: BLE001
            cell.broken += 1
            cell.broken_msg = f"{type(e).__name__}: {e}"
            break
        cell.add(r, keep)
        aim.update(r.populate_ns)
        i += 1
        if on_round is not None:
            on_round(cell, r)
    cell.elapsed_s = time.monotonic() - t0
    return cell
