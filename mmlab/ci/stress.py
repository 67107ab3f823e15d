"""One seed under the stress harness: race cells and a test's own tasks, judged by the oracle.

What a seeded test item (or one seed of a stress suite) runs. Everything random comes from the
item's seed: the round seeds of a race cell (:func:`mmlab.harness.race.round_seed`), the start
delays of a test's tasks. Each round is graded by the race oracle (:mod:`mmlab.harness.oracle`),
whose verdict rests on provenance and lineage only, and counted into a :class:`Row` with its
latency samples (HDR histograms), so a sweep adds up to one table.

A grade the caller does not allow raises :class:`SeedFailure`: what happened, the round, the
oracle's report with the call history, and the commands that replay it.
"""

from __future__ import annotations

import random
import threading
from typing import Any, Callable, Iterable, Optional, Union

from mmlab.clock import Costs
from mmlab.current import set_task_name
from mmlab.harness.oracle import FORBIDDEN, INTERESTING, OK, Snapshot, Verdict, capture, judge
from mmlab.harness.populators import POPULATORS, Populator
from mmlab.harness.race import CellResult, RoundHang, RoundResult, round_seed, run_cell
from mmlab.harness.racers import RACERS, Racer
from mmlab.harness.sizes import format_size, parse_size
from mmlab.kernels import Kernel, get_kernel
from mmlab.mm.mm_struct import MM

from mmlab.ci.results import Row

__all__ = ["SeedFailure", "Stress", "race_replay_cmd", "record_round", "run_race_seed", "failure_detail",
           "ALLOW_DEFAULT"]

ALLOW_DEFAULT = (OK, INTERESTING)
TaskFn = Callable[[MM, Any], object]


class SeedFailure(AssertionError):
    """An outcome the test does not allow, with what is needed to replay it."""

    def __init__(self, what: str, detail: str, *, replay: Iterable[str] = (), token: str = "") -> None:
        super().__init__(f"{what}\n{detail}" if detail else what)
        self.what = what
        self.detail = detail
        self.replay = list(replay)
        self.token = token


def race_replay_cmd(kernel: str, pop: str, racer: str, rseed: int, size: int, costs: Costs) -> str:
    return (f"mmlab race --kernel {kernel} --populator {pop} --racer {racer} --round-seed {rseed} "
            f"--size {format_size(size)} --time-scale {costs.time_scale:g}")


def _max_wait(snap: Optional[Snapshot]) -> int:
    if snap is None:
        return 0
    return max((max(r.acq_ns - r.req_ns, 0) for r in snap.locks if r.acq_ns >= 0), default=0)


def record_round(row: Row, r: RoundResult) -> None:
    """Count one race round into *row*: its grade, its window evidence, its latencies."""
    v = r.verdict
    row.rounds += 1
    row.overlaps += r.overlap
    row.window_hits += r.window_hit
    row.outcomes[v.outcome] += 1
    row.wrong_pages += v.wrong_pages
    row.max_wrong_pages = max(row.max_wrong_pages, v.wrong_pages)
    if r.populate_ns:
        row.hist("populate").record_value(min(r.populate_ns, 600 * 10**9))
    snap = v.snapshot
    if snap is not None:
        for lk in snap.locks:
            if lk.task == "racer" and lk.acq_ns >= 0:
                row.hist("racer_wait").record_value(min(max(lk.acq_ns - lk.req_ns, 0), 600 * 10**9))
        row.hist("max_wait").record_value(min(_max_wait(snap), 600 * 10**9))


def run_race_seed(kernel: Union[str, Kernel], pop: Populator, racer: Racer, *, seed: int, rounds: int,
                  size: int, costs: Costs, suite: str, keep: int = 3) -> tuple[CellResult, Row, list[RoundResult]]:
    """*rounds* rounds of one kernel x populator x racer cell from *seed*, counted in a Row, and
    the rounds graded worse than OK (their snapshots kept for the first *keep*). A hung round
    raises RoundHang (with stacks and lock state)."""
    k = get_kernel(kernel)
    row = Row(suite, k.name, pop.name, racer.name, seeds=1)
    notable: list[RoundResult] = []

    def on_round(cell: CellResult, r: RoundResult) -> None:
        record_round(row, r)
        if r.outcome != OK:
            if len(notable) >= keep:
                r.verdict.snapshot = None
            notable.append(r)
        else:
            r.verdict.snapshot = None

    cell = run_cell(k, pop, racer, seed=seed, size=size, costs=costs, rounds=rounds, keep=0, on_round=on_round)
    row.broken = cell.broken
    return cell, row, notable


def failure_detail(cell: CellResult, bad: list[RoundResult], seed: int, size: int, costs: Costs,
                   show: int = 1) -> tuple[str, str, list[str]]:
    """What failed in *cell* (the rounds *bad*), the oracle's report of the first *show* of
    them, and the replay command of each."""
    o = cell.outcomes
    grade = bad[0].outcome if bad else "BROKEN"
    what = (f"{grade} in {cell.kernel} {cell.populator} vs {cell.racer}, seed {seed}: {cell.rounds} rounds, "
            f"OK {o['OK']} INTERESTING {o['INTERESTING']} FORBIDDEN {o['FORBIDDEN']} "
            f"({cell.wrong_pages} wrongly populated pages)")
    lines = []
    replay = [race_replay_cmd(cell.kernel, cell.populator, cell.racer, r.seed, size, costs) for r in bad]
    for r in bad[:show]:
        lines.append(f"round seed {r.seed}: racer fired {r.delay_ns / 1e6:.3f} ms into the call"
                     f"{' (inside the populate window)' if r.window_hit else ''}")
        lines.append(r.verdict.report(history=True))
    if cell.broken:
        lines.append(f"broken round: {cell.broken_msg}")
    return what, "\n".join(lines), replay


class Stress:
    """The stress harness of one seeded test item: its kernel, seed, costs and defaults.

    ``race(populator, racer)`` runs a race cell; ``run(tasks, setup=...)`` runs the test's own
    tasks as real threads from seeded start delays, one fresh model per round. Both grade every
    round with the oracle, count it into the session's results and raise :class:`SeedFailure`
    on a grade not in ``allow`` (default OK and INTERESTING).
    """

    def __init__(self, kernel: Union[str, Kernel], seed: int, costs: Costs, *, rounds: int = 4,
                 size: Union[int, str] = "1M", suite: str = "test", record: Callable[[Row], None] = lambda r: None,
                 register: Callable[[MM], None] = lambda mm: None) -> None:
        self.kernel = get_kernel(kernel)
        self.seed = seed
        self.costs = costs
        self.rounds = rounds
        self.size = parse_size(size)
        self.suite = suite
        self._record = record
        self._register = register
        self.rng = random.Random(seed)

    def race(self, populator: Union[str, Populator], racer: Union[str, Racer], *, rounds: Optional[int] = None,
             size: Union[int, str, None] = None, allow: Iterable[str] = ALLOW_DEFAULT) -> CellResult:
        pop = POPULATORS[populator] if isinstance(populator, str) else populator
        rc = RACERS[racer] if isinstance(racer, str) else racer
        n = rounds or self.rounds
        sz = parse_size(size) if size is not None else self.size
        allow = tuple(allow)
        try:
            cell, row, notable = run_race_seed(self.kernel, pop, rc, seed=self.seed, rounds=n, size=sz,
                                               costs=self.costs, suite=self.suite)
        except RoundHang as h:
            row = Row(self.suite, self.kernel.name, pop.name, rc.name, seeds=1, hangs=1, failed_seeds=[self.seed])
            self._record(row)
            raise SeedFailure(f"HANG in {self.kernel.name} {pop.name} vs {rc.name}, seed {self.seed}: {h}",
                              f"lock state: {h.lock_state}\n{h.stacks}") from None
        bad = [g for g in (OK, INTERESTING, FORBIDDEN) if cell.outcomes[g] and g not in allow]
        if bad or cell.broken:
            row.failed_seeds = [self.seed]
        self._record(row)
        if bad or cell.broken:
            what, detail, replay = failure_detail(cell, [r for r in notable if r.outcome not in allow],
                                                  self.seed, sz, self.costs)
            raise SeedFailure(what, detail, replay=replay)
        return cell

    def run(self, tasks: dict[str, TaskFn], *, setup: Optional[Callable[[MM], Any]] = None,
            rounds: Optional[int] = None, jitter_us: float = 500.0, allow: Iterable[str] = ALLOW_DEFAULT,
            name: str = "tasks") -> list[Verdict]:
        """Rounds of *tasks* (name -> fn(mm, state)) on a fresh model each: ``setup(mm)`` runs
        first and returns the state; the tasks start behind one barrier, each after a seeded
        delay in [0, jitter_us) of model time. An OSError is a normal outcome of a racing call
        (the oracle judges the model); any other exception fails the test."""
        allow = tuple(allow)
        n = rounds or self.rounds
        row = Row(self.suite, self.kernel.name, name, "-", seeds=1)
        verdicts: list[Verdict] = []
        failed: Optional[SeedFailure] = None
        try:
            for i in range(n):
                rs = round_seed(self.seed, self.kernel.name, name, ",".join(tasks), i)
                v = self._one_round(tasks, setup, rs, jitter_us)
                verdicts.append(v)
                row.rounds += 1
                row.outcomes[v.outcome] += 1
                row.wrong_pages += v.wrong_pages
                row.max_wrong_pages = max(row.max_wrong_pages, v.wrong_pages)
                row.hist("max_wait").record_value(min(_max_wait(v.snapshot), 600 * 10**9))
                if v.outcome not in allow and failed is None:
                    failed = SeedFailure(f"{v.outcome} in round {i} (round seed {rs}) of {name} on "
                                         f"{self.kernel.name}, seed {self.seed}", v.report(history=True))
                    break
        finally:
            if failed is not None:
                row.failed_seeds = [self.seed]
            self._record(row)
        if failed is not None:
            raise failed
        return verdicts

    def _one_round(self, tasks: dict[str, TaskFn], setup: Optional[Callable[[MM], Any]], rs: int,
                   jitter_us: float) -> Verdict:
        rng = random.Random(rs)
        delays = {name: int(rng.random() * jitter_us * 1e3) for name in tasks}
        mm = MM(self.kernel, self.costs)
        self._register(mm)
        state = setup(mm) if setup is not None else None
        barrier = threading.Barrier(len(tasks))
        errors: list[tuple[str, BaseException]] = []

        def main(name: str, fn: TaskFn) -> None:
            set_task_name(name)
            try:
                barrier.wait()
                mm.clock.wait(delays[name], "start delay")
                fn(mm, state)
            except OSError:
                pass
            except threading.BrokenBarrierError:
                pass
            except BaseException as e:  # noqa: BLE001 - re-raised below with the task's name
                errors.append((name, e))
                barrier.abort()

        threads = [threading.Thread(target=main, args=(n, f), name=n, daemon=True) for n, f in tasks.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()  # a task that never ends is a hang: the test's guard reports it
        if errors:
            name, e = errors[0]
            raise RuntimeError(f"task {name} raised {type(e).__name__}: {e}") from e
        return judge(capture(mm))
