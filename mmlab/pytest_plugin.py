"""mmlab's pytest plugin: models, tasks and the race oracle as fixtures; one test item per seed.

Registered through the ``pytest11`` entry point (``mmlab = "mmlab.pytest_plugin"``), so an
installed mmlab is active in every pytest run; without installing, add ``-p mmlab.pytest_plugin``.

Fixtures
    ``mmlab_kernel``   the kernel profile of the item (a Kernel); parametrized: v6.18 unless the test
                       is marked ``mmlab_kernels("v3.9", "bounded")`` or ``mmlab_all_kernels``;
    ``mmlab_seed``     the item's seed; every test that uses it becomes one item per seed;
    ``mmlab_rng``      random.Random(mmlab_seed);
    ``mmlab_costs``    DEFAULT_COSTS scaled by ``--mmlab-time-scale`` (default 0.1);
    ``mmlab_mm``       a fresh MM for the item's kernel;
    ``mmlab_threads``  real task threads, always joined at teardown (their exceptions fail the test);
    ``mmlab_oracle``   the race oracle: ``check(mm)`` a Verdict, ``expect(mm, allow=...)`` fails the test;
    ``mmlab_stress``   the stress harness for the item's kernel and seed: ``race(populator, racer)``,
                       ``run(tasks, setup=...)`` (mmlab.ci.stress.Stress).

Markers
    ``mmlab_seeds(N | "A..B")``, ``mmlab_kernels(*specs)``, ``mmlab_all_kernels``,
    ``mmlab_stress(rounds=, size=, time_scale=, seeds=)`` and ``mmlab_hang(seconds)``.

Options
    ``--mmlab-seeds N|A..B`` turns every seeded test (and every stress suite) into one item per seed,
    so ``-n`` spreads them over processes; ``--mmlab-kernels``, ``--mmlab-shard i/n``,
    ``--mmlab-rounds``, ``--mmlab-time-scale``, ``--mmlab-hang-timeout`` and ``--mmlab-json FILE``.

Every failure of a seeded item carries its seed and the commands that replay it; a body that hangs
fails with every thread's stack and the lock state, before pytest-timeout would kill the worker.
At the end, the outcome counts and latency histograms of every worker are merged into one table
and one JSON file. Stress suite files (``stress/*.toml``) are collected as items too.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shlex
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

from mmlab.ci.explore import Explorer
from mmlab.ci.hang import HangError, call_guarded, dump_threads
from mmlab.ci.results import Failure, Results, Row, merge_docs
from mmlab.ci.seeds import format_seeds, parse_seeds, parse_shard, shard
from mmlab.ci.stress import SeedFailure, Stress, race_replay_cmd, record_round
from mmlab.clock import DEFAULT_COSTS, Costs
from mmlab.current import set_task_name
from mmlab.harness.oracle import INTERESTING, OK, Verdict, capture, judge
from mmlab.harness.stress import run_suite
from mmlab.harness.suite import Suite, SuiteError, load_suite
from mmlab.kernels import KERNELS, Kernel, get_kernel
from mmlab.mm.mm_struct import MM

DEFAULT_KERNELS = ("v6.18",)
DEFAULT_TIME_SCALE = 0.1
DEFAULT_ROUNDS = 4
DEFAULT_HANG_S = 60.0
_FIXTURES = frozenset({"mmlab_kernel", "mmlab_seed", "mmlab_rng", "mmlab_costs", "mmlab_mm", "mmlab_threads",
                       "mmlab_oracle", "mmlab_stress", "mmlab_explore"})
_MARKERS = ("mmlab_seeds", "mmlab_kernels", "mmlab_all_kernels", "mmlab_stress", "mmlab_explore", "mmlab_hang")
_RESULTS_KEY = "mmlab_results"

models_key = pytest.StashKey[list]()
hung_key = pytest.StashKey[bool]()
state_key = pytest.StashKey["_State"]()


class _State:
    """The session's results (this process's), and the workers' documents on the controller."""

    def __init__(self) -> None:
        self.results = Results()
        self.parts: list[tuple[str, dict[str, Any]]] = []
        self.crashed: list[str] = []
        self.merged: Optional[Results] = None


# ---------------------------------------------------------------------------- options and markers
def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("mmlab", "mmlab: seed sweeps of models of the Linux mm")
    g.addoption("--mmlab-seeds", metavar="N|A..B", help="seeds of every seeded test and stress suite: N "
                "(0..N-1) or A..B (inclusive); one test item per seed")
    g.addoption("--mmlab-kernels", metavar="LIST", help="kernel profiles (comma-separated specs, or all) for "
                "tests that take mmlab_kernel and for stress suites (intersected with a test's own marker)")
    g.addoption("--mmlab-shard", metavar="i/n", help="run only shard i of n of every seed range")
    g.addoption("--mmlab-rounds", type=int, metavar="N", help="race rounds per seed (default: the suite's or "
                f"the marker's, else {DEFAULT_ROUNDS})")
    g.addoption("--mmlab-time-scale", type=float, metavar="F", help="cost multiplier of the models "
                f"(default: the marker's or suite's, else {DEFAULT_TIME_SCALE})")
    g.addoption("--mmlab-costs", metavar="FILE", help="cost profile (mmlab calibrate) of the models; default: "
                "the built-in costs -- tests never read $MMLAB_COSTS or ~/.config/mmlab")
    g.addoption("--mmlab-hang-timeout", type=float, metavar="S", help="a test body running, or a task waiting "
                f"for mmap_sem, longer than S is a hang (default {DEFAULT_HANG_S:g}, always below pytest-timeout)")
    g.addoption("--mmlab-json", metavar="FILE", help="write the merged results (counts, histograms, failures "
                "with their replay commands, per-worker parts) as JSON")


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "mmlab_seeds(seeds): run the test once per seed (N or 'A..B'); --mmlab-seeds overrides",
        "mmlab_kernels(*specs): the kernel profiles mmlab_kernel takes (default v6.18)",
        "mmlab_all_kernels: run the test on every kernel profile",
        "mmlab_stress(rounds=4, size='1M', time_scale=0.1, seeds=1): the body runs under the stress "
        "harness (fixture mmlab_stress) for each seed",
        "mmlab_explore(iterations=200, strategy='pct', depth=2, time_scale=0.1, seeds=1): the body runs "
        "under controlled exploration (fixture mmlab_explore) for each seed; failures carry a replay token",
        "mmlab_hang(seconds): a hang limit for this test below pytest-timeout's",
    ):
        config.addinivalue_line("markers", line)
    try:
        for opt, parse in (("--mmlab-seeds", parse_seeds), ("--mmlab-shard", parse_shard),
                           ("--mmlab-kernels", _kernel_list)):
            v = config.getoption(opt)
            if v is not None:
                parse(v)
    except ValueError as e:
        raise pytest.UsageError(f"{opt}: {e}") from None
    config.stash[state_key] = _State()


def _kernel_list(spec: str) -> list[str]:
    s = spec.strip()
    if s in ("", "all"):
        return list(KERNELS)
    out = [x.strip() for x in s.split(",") if x.strip()]
    for x in out:
        get_kernel(x)
    return out


def _marker_arg(item_or_func: Any, name: str, key: str, default: Any = None) -> Any:
    m = item_or_func.get_closest_marker(name) if hasattr(item_or_func, "get_closest_marker") else None
    if m is None:
        return default
    if key in m.kwargs:
        return m.kwargs[key]
    return m.args[0] if m.args else default


def _seeds(config: pytest.Config, marker_seeds: Any = None) -> range:
    opt = config.getoption("--mmlab-seeds")
    seeds = parse_seeds(opt if opt is not None else (marker_seeds if marker_seeds is not None else 1))
    sh = config.getoption("--mmlab-shard")
    if sh:
        seeds = shard(seeds, *parse_shard(sh))
    return seeds


def _kernels(config: pytest.Config, own: Optional[list[str]]) -> list[str]:
    opt = config.getoption("--mmlab-kernels")
    if opt is None:
        return list(own) if own is not None else list(DEFAULT_KERNELS)
    chosen = _kernel_list(opt)
    if own is None:
        return chosen
    return [k for k in own if k in chosen or k.split("+")[0] in chosen]


def _own_kernels(node: Any) -> Optional[list[str]]:
    if node.get_closest_marker("mmlab_all_kernels") is not None:
        return list(KERNELS)
    m = node.get_closest_marker("mmlab_kernels")
    if m is not None:
        return [a for arg in m.args for a in ([arg] if isinstance(arg, str) else arg)]
    return None


# ---------------------------------------------------------------------------- one item per seed
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = metafunc.fixturenames
    node = metafunc.definition
    seeded = "mmlab_seed" in names or any(node.get_closest_marker(m) is not None
                                          for m in ("mmlab_stress", "mmlab_explore", "mmlab_seeds"))
    if "mmlab_kernel" in names:
        ks = _kernels(metafunc.config, _own_kernels(node))
        metafunc.parametrize("mmlab_kernel", ks, ids=ks, indirect=True)
    if seeded:
        ms = _marker_arg(node, "mmlab_seeds", "seeds")
        for m in ("mmlab_stress", "mmlab_explore"):
            mk = node.get_closest_marker(m)
            if ms is None and mk is not None:
                ms = mk.kwargs.get("seeds")
        seeds = list(_seeds(metafunc.config, ms))
        if "mmlab_seed" not in names:
            metafunc.fixturenames.append("mmlab_seed")
        metafunc.parametrize("mmlab_seed", seeds, ids=[f"seed{s}" for s in seeds], indirect=True)


@pytest.fixture
def mmlab_kernel(request: pytest.FixtureRequest) -> Kernel:
    """The kernel profile of this item."""
    k = get_kernel(getattr(request, "param", DEFAULT_KERNELS[0]))
    request.node.user_properties.append(("mmlab_kernel", k.name))
    return k


@pytest.fixture
def mmlab_seed(request: pytest.FixtureRequest) -> int:
    """This item's seed: every random choice of the test comes from it."""
    s = int(getattr(request, "param", 0))
    request.node.user_properties.append(("mmlab_seed", s))
    return s


@pytest.fixture
def mmlab_rng(mmlab_seed: int) -> random.Random:
    return random.Random(mmlab_seed)


@pytest.fixture
def mmlab_costs(request: pytest.FixtureRequest) -> Costs:
    return _base_costs(request.config).scaled(_time_scale(request.node))


def _base_costs(config: pytest.Config) -> Costs:
    """``--mmlab-costs FILE`` at time scale 1, else the built-in costs (never the user's default
    profile: a test run must not depend on what `mmlab calibrate` left in the home directory)."""
    path = config.getoption("--mmlab-costs", None)
    if not path:
        return DEFAULT_COSTS
    from mmlab.costprofile import CostProfileError, load
    try:
        return load(path).costs
    except CostProfileError as e:
        raise pytest.UsageError(f"--mmlab-costs: {e}") from None


def _time_scale(node: Any, default: float = DEFAULT_TIME_SCALE) -> float:
    for name in ("mmlab_stress", "mmlab_explore"):
        m = node.get_closest_marker(name)
        if m is not None and "time_scale" in m.kwargs:
            return float(m.kwargs["time_scale"])
    opt = node.config.getoption("--mmlab-time-scale")
    return float(opt) if opt is not None else default


def _models(node: pytest.Item) -> list[MM]:
    ms = node.stash.get(models_key, None)
    if ms is None:
        ms = node.stash[models_key] = []
    return ms


@pytest.fixture
def mmlab_mm(request: pytest.FixtureRequest, mmlab_kernel: Kernel, mmlab_costs: Costs) -> MM:
    """A fresh model of a process's mm_struct under the item's kernel profile."""
    mm = MM(mmlab_kernel, mmlab_costs)
    _models(request.node).append(mm)
    return mm


class TaskThreads:
    """Real task threads for a test: ``start(name, fn, *args)`` runs fn as task *name*;
    ``join()`` waits for all and re-raises the first exception. The fixture joins them at
    teardown too, so no thread outlives its test unnoticed."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: list[tuple[str, BaseException]] = []

    def start(self, name: str, fn: Callable[..., object], *args: Any) -> threading.Thread:
        def main() -> None:
            set_task_name(name)
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - re-raised by join()
                self.errors.append((name, e))

        t = threading.Thread(target=main, name=name, daemon=True)
        self.threads.append(t)
        t.start()
        return t

    def join(self, timeout: Optional[float] = None) -> None:
        for t in self.threads:
            t.join(timeout)
        alive = [t.name for t in self.threads if t.is_alive()]
        if alive:
            raise AssertionError(f"task threads still running: {', '.join(alive)}\n{dump_threads()}")
        if self.errors:
            name, e = self.errors[0]
            raise AssertionError(f"task {name} raised {type(e).__name__}: {e}") from e


@pytest.fixture
def mmlab_threads(request: pytest.FixtureRequest) -> Iterator[TaskThreads]:
    g = TaskThreads()
    yield g
    if request.node.stash.get(hung_key, False):
        return  # the hang report already named them; they cannot be joined
    g.join(timeout=10.0)


class Oracle:
    """The race oracle for a test: ``check(mm)`` grades a quiescent model; ``expect(mm)``
    fails the test (with the oracle's report and the call history) on a grade not allowed."""

    def __init__(self, node: pytest.Item, record: Callable[[Row], None]) -> None:
        self._node = node
        self._record = record

    def check(self, mm: MM) -> Verdict:
        v = judge(capture(mm))
        row = Row(_suite_name(self._node), mm.kernel.name, "oracle", "-", seeds=0, rounds=1)
        row.outcomes[v.outcome] += 1
        row.wrong_pages = row.max_wrong_pages = v.wrong_pages
        self._record(row)
        return v

    def expect(self, mm: MM, allow: tuple[str, ...] = (OK, INTERESTING)) -> Verdict:
        v = self.check(mm)
        if v.outcome not in allow:
            raise SeedFailure(f"oracle: {v.outcome} on {mm.kernel.name} (allowed: {', '.join(allow)})",
                              v.report(history=True))
        return v


def _suite_name(node: pytest.Item) -> str:
    """A test's row name: its file and function, without the directories and parameters."""
    return node.nodeid.split("[")[0].rsplit("/", 1)[-1]


def _recorder(node: pytest.Item) -> Callable[[Row], None]:
    results = node.config.stash[state_key].results

    def record(row: Row) -> None:
        results.add_row(row)
    return record


@pytest.fixture
def mmlab_oracle(request: pytest.FixtureRequest) -> Oracle:
    return Oracle(request.node, _recorder(request.node))


@pytest.fixture
def mmlab_stress(request: pytest.FixtureRequest, mmlab_kernel: Kernel, mmlab_seed: int) -> Stress:
    node = request.node
    m = node.get_closest_marker("mmlab_stress")
    kw = dict(m.kwargs) if m is not None else {}
    rounds = node.config.getoption("--mmlab-rounds") or kw.get("rounds", DEFAULT_ROUNDS)
    seeds_row = _recorder(node)
    return Stress(mmlab_kernel, mmlab_seed, _base_costs(node.config).scaled(_time_scale(node)), rounds=int(rounds),
                  size=kw.get("size", "1M"), suite=_suite_name(node), record=seeds_row,
                  register=_models(node).append)


@pytest.fixture
def mmlab_explore(request: pytest.FixtureRequest, mmlab_kernel: Kernel, mmlab_seed: int) -> Explorer:
    """Controlled exploration for the item's kernel and seed: ``race(populator, racer)``."""
    node = request.node
    m = node.get_closest_marker("mmlab_explore")
    kw = dict(m.kwargs) if m is not None else {}
    spec = str(getattr(request.node, "callspec", None) and request.node.callspec.params.get("mmlab_kernel")
               or mmlab_kernel.name)
    return Explorer(mmlab_kernel, spec, mmlab_seed, _time_scale(node), iterations=int(kw.get("iterations", 200)),
                    strategy=str(kw.get("strategy", "pct")), depth=int(kw.get("depth", 2)), suite=_suite_name(node),
                    record=_recorder(node))


# ---------------------------------------------------------------------------- hangs become failures
def _is_mmlab_item(item: pytest.Item) -> bool:
    if isinstance(item, SuiteItem):
        return True
    names = set(getattr(item, "fixturenames", ()))
    return bool(names & _FIXTURES) or any(item.get_closest_marker(m) is not None for m in _MARKERS)


def _pytest_timeout(item: pytest.Item) -> float:
    m = item.get_closest_marker("timeout")
    if m is not None:
        v = m.kwargs.get("timeout", m.args[0] if m.args else None)
        if v is not None:
            return float(v)
    try:
        v = item.config.getoption("timeout")
    except ValueError:
        v = None
    if v is None:
        try:
            v = item.config.getini("timeout")
        except ValueError:
            v = None
    try:
        return float(v) if v not in (None, "") else 0.0
    except (TypeError, ValueError):
        return 0.0


def hang_limit(item: pytest.Item) -> float:
    """The body's hang limit: the marker's, the option's or the default, and always below
    pytest-timeout's (which would kill an xdist worker), leaving room for teardown."""
    lim = _marker_arg(item, "mmlab_hang", "seconds")
    if lim is None:
        lim = item.config.getoption("--mmlab-hang-timeout")
    lim = float(lim) if lim is not None else DEFAULT_HANG_S
    pt = _pytest_timeout(item)
    if pt > 0:
        lim = min(lim, pt * 0.75, max(pt - 10.0, pt * 0.5))
    return lim


SWITCH_INTERVAL_S = 0.0005  # as `mmlab race`: the GIL changes hands often, so threads interleave finely


def _run_guarded(item: pytest.Item, fn: Callable[[], Any]) -> Any:
    lim = hang_limit(item)
    old = sys.getswitchinterval()
    sys.setswitchinterval(min(old, SWITCH_INTERVAL_S))
    try:
        # a task waiting for mmap_sem for 3/4 of the body's budget is a hang: reported as a lock
        # hang, with the waiter named, before the body's own deadline
        return call_guarded(fn, limit_s=lim, lock_hang_s=0.75 * lim, models=lambda: list(_models(item)),
                            name=f"mmlab-body:{item.name}")
    except HangError:
        item.stash[hung_key] = True
        raise
    finally:
        sys.setswitchinterval(old)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Optional[bool]:
    if not _is_mmlab_item(pyfuncitem):
        return None
    fn = pyfuncitem.obj
    args = {a: pyfuncitem.funcargs[a] for a in pyfuncitem._fixtureinfo.argnames}
    _run_guarded(pyfuncitem, lambda: fn(**args))
    return True


# ---------------------------------------------------------------------------- failures carry the seed
def _item_seed(item: pytest.Item) -> Optional[int]:
    if isinstance(item, SuiteItem):
        return item.seed
    cs = getattr(item, "callspec", None)
    if cs is not None and "mmlab_seed" in cs.params:
        return int(cs.params["mmlab_seed"])
    return None


def _item_kernel(item: pytest.Item) -> str:
    if isinstance(item, SuiteItem):
        return item.kernel
    cs = getattr(item, "callspec", None)
    if cs is not None and "mmlab_kernel" in cs.params:
        return str(cs.params["mmlab_kernel"])
    return ""


def _installed() -> bool:
    """Is the plugin registered through its entry point (mmlab installed)?"""
    import importlib.metadata
    return any(e.value == "mmlab.pytest_plugin" for e in importlib.metadata.entry_points(group="pytest11"))


def replay_command(item: pytest.Item) -> str:
    """The pytest command line that runs exactly this item again, seed included."""
    cfg = item.config
    parts = ["pytest", item.nodeid]
    if not _installed():
        parts[1:1] = ["-p", "mmlab.pytest_plugin"]
    seed = _item_seed(item)
    if seed is not None:
        parts += ["--mmlab-seeds", f"{seed}..{seed}"]
    k = _item_kernel(item)
    if k:
        parts += ["--mmlab-kernels", k]
    for opt in ("--mmlab-rounds", "--mmlab-time-scale"):
        v = cfg.getoption(opt)
        if v is not None:
            parts += [opt, str(v)]
    return shlex.join(parts)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    rep: pytest.TestReport = outcome.get_result()
    if not _is_mmlab_item(item):
        return
    st = item.config.stash[state_key]
    st.results.span(rep.start, rep.stop)
    if rep.when == "call" or (rep.when == "setup" and not rep.passed):
        st.results.count_item("failed" if rep.failed else rep.outcome)
    if not rep.failed:
        return
    seed = _item_seed(item)
    kernel = _item_kernel(item)
    exc = call.excinfo.value if call.excinfo is not None else None
    replay = [replay_command(item)]
    token = ""
    if isinstance(exc, SeedFailure):
        replay += exc.replay
        token = exc.token
        what = exc.what
    elif isinstance(exc, HangError):
        what = f"HANG: {exc.why}"
    elif call.excinfo is not None:
        what = call.excinfo.exconly().splitlines()[0][:300]
    else:
        what = "failed"
    lines = [f"seed: {seed if seed is not None else '(not seeded)'}" + (f", kernel {kernel}" if kernel else "")]
    lines.append(f"token: {token if token else '(none: free-running threads; the seed replays the same random choices, the OS picks the interleaving)'}")
    lines.append(f"replay: {replay[0]}")
    lines += [f"replay: {c}" for c in replay[1:4]]
    if len(replay) > 4:
        lines.append(f"... {len(replay) - 4} more rounds failed (all in --mmlab-json)")
    text = "\n".join(lines)
    lr = rep.longrepr
    if hasattr(lr, "addsection"):
        lr.addsection("mmlab", text)
    else:
        rep.longrepr = f"{lr}\n\n{'-' * 20} mmlab {'-' * 20}\n{text}"
    when = "" if rep.when == "call" else f" (in {rep.when})"
    suite = item.suite.name if isinstance(item, SuiteItem) else ""
    st.results.add_failure(Failure(item.nodeid, seed, kernel, what + when, what, replay, token, suite))


# ---------------------------------------------------------------------------- stress suites as items
def is_suite_file(path: Path) -> bool:
    """A TOML file in a directory named ``stress``: a stress suite (mmlab/harness/suite.py)."""
    return path.suffix == ".toml" and path.parent.name == "stress"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> Optional[pytest.Collector]:
    if is_suite_file(file_path):
        return SuiteFile.from_parent(parent, path=file_path)
    return None


class SuiteFile(pytest.File):
    """A stress suite: one item per (kernel, seed), each the run ``mmlab stress FILE --kernel K
    --seed S`` makes."""

    def collect(self) -> Iterator[pytest.Item]:
        try:
            suite = load_suite(self.path)
        except SuiteError as e:
            raise self.CollectError(str(e)) from None
        self.config.stash[state_key].results.suite_files[suite.name] = str(self.path)
        seeds = _seeds(self.config, str(suite.seed) + ".." + str(suite.seed))
        for k in _kernels(self.config, list(suite.kernels)):
            for s in seeds:
                yield SuiteItem.from_parent(self, name=f"{suite.name}[{k}-seed{s}]", suite=suite, kernel=k, seed=s)


class SuiteItem(pytest.Item):
    """One seed of one kernel of a stress suite: its race sections and its workload, then its
    expectations (never, reproduce, stall bounds), as ``mmlab stress`` checks them."""

    def __init__(self, *, suite: Suite, kernel: str, seed: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.suite = suite
        self.kernel = kernel
        self.seed = seed
        self.user_properties += [("mmlab_seed", seed), ("mmlab_kernel", kernel)]

    def runtest(self) -> None:
        _run_guarded(self, self._run)

    def _suite_for_item(self) -> Suite:
        cfg = self.config
        changes: dict[str, Any] = {"kernels": (self.kernel,), "seed": self.seed, "costs": _base_costs(cfg)}
        ts = cfg.getoption("--mmlab-time-scale")
        if ts is not None:
            changes["time_scale"] = ts
        rounds = cfg.getoption("--mmlab-rounds")
        if rounds:
            changes["races"] = [dataclasses.replace(r, rounds=rounds, duration_s=0.0) for r in self.suite.races]
        return dataclasses.replace(self.suite, **changes)

    def replay_stress(self) -> str:
        cfg = self.config
        parts = ["mmlab", "stress", str(self.path), "--kernel", self.kernel, "--seed", str(self.seed)]
        ts = cfg.getoption("--mmlab-time-scale")
        if ts is not None:
            parts += ["--time-scale", str(ts)]
        return shlex.join(parts)

    def _run(self) -> None:
        sub = self._suite_for_item()
        name = sub.name
        results = self.config.stash[state_key].results
        kname = get_kernel(self.kernel).name
        rows: dict[tuple[str, str], Row] = {}

        bad_rounds: list[str] = []

        def on_round(k: str, cell: Any, rr: Any) -> None:
            row = rows.get((cell.populator, cell.racer))
            if row is None:
                row = rows[(cell.populator, cell.racer)] = Row(name, kname, cell.populator, cell.racer, seeds=1)
            record_round(row, rr)
            row.calls += rr.calls
            if rr.outcome in self._never(sub, k, cell.populator, cell.racer):
                bad_rounds.append(race_replay_cmd(k, cell.populator, cell.racer, rr.seed,
                                                  self._section(sub, k, cell.populator, cell.racer).size,
                                                  sub.costs.scaled(sub.time_scale)))

        res = run_suite(sub, on_round=on_round)
        failed = res.status != "HELD"
        for run in res.runs:
            for _i, cell in run.cells:
                row = rows.pop((cell.populator, cell.racer), None) or Row(name, kname, cell.populator, cell.racer,
                                                                         seeds=1)
                row.broken, row.kinds = cell.broken, dict(cell.kinds)
                self._finish(row, failed, bool(res.hang), results)
            wl = run.workload
            if wl is not None and wl.reason != "skipped":
                row = Row(name, kname, "workload", "-", seeds=1, calls=wl.calls)
                if wl.verdict is not None:
                    row.rounds = 1
                    row.outcomes[wl.verdict.outcome] += 1
                    row.wrong_pages = row.max_wrong_pages = wl.verdict.wrong_pages
                    for f in wl.verdict.findings:
                        if f.grade != "OK":
                            row.kinds[f.kind] = row.kinds.get(f.kind, 0) + 1
                row.hist("max_wait").record_value(min(int(wl.worst_wait_ms * 1e6), 600 * 10**9))
                self._finish(row, failed, wl.reason == "hang", results)
        if failed:
            what = (f"{res.status} {name} on {self.kernel}, seed {self.seed}: "
                    + "; ".join(res.violations or [res.hang.splitlines()[0] if res.hang else "interrupted"]))
            if res.hang:
                what = "HANG: " + what
            detail = "\n".join(res.details + ([res.hang] if res.hang else []))
            raise SeedFailure(what, detail, replay=[self.replay_stress(), *bad_rounds])

    @staticmethod
    def _section(suite: Suite, k: str, pop: str, racer: str) -> Any:
        return next(sec for sec in suite.races if pop in sec.populators and racer in sec.racers
                    and (not sec.kernels or k in sec.kernels))

    def _never(self, suite: Suite, k: str, pop: str, racer: str) -> tuple[str, ...]:
        return suite.expect_for(k, self._section(suite, k, pop, racer)).never

    def _finish(self, row: Row, failed: bool, hung: bool, results: Results) -> None:
        if failed:
            row.failed_seeds = [self.seed]
        row.hangs = int(hung)
        results.add_row(row)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, (SeedFailure, HangError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, Optional[int], str]:
        return self.path, None, f"{self.suite.name} on {self.kernel}, seed {self.seed}"


# ---------------------------------------------------------------------------- merged results
@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist, on the controller: keep each worker's results document."""
    config = node.config
    st = config.stash.get(state_key, None)
    if st is None:
        return
    wid = node.gateway.id
    out = getattr(node, "workeroutput", {}) or {}
    doc = out.get(_RESULTS_KEY)
    if doc is None:
        st.crashed.append(wid)
        return
    st.parts.append((wid, json.loads(doc)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    st = config.stash.get(state_key, None)
    if st is None:
        return
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: ship this process's results
        workeroutput[_RESULTS_KEY] = json.dumps(st.results.as_dict())
        return
    parts = st.parts if st.parts or st.crashed else [("main", st.results.as_dict())]
    merged = merge_docs(parts)
    st.merged = merged
    path = config.getoption("--mmlab-json")
    if path and not merged.empty:
        seeds = config.getoption("--mmlab-seeds")
        merged.write_json(path, seeds=format_seeds(parse_seeds(seeds)) if seeds else None,
                          kernels=config.getoption("--mmlab-kernels"), shard=config.getoption("--mmlab-shard"),
                          crashed_workers=st.crashed, interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    st = config.stash.get(state_key, None)
    if st is None or st.merged is None or st.merged.empty:
        return
    import io

    from mmlab.report.console import ReportConsole  # names whole even past the width (report/console.py)
    tr = terminalreporter
    tr.write_sep("=", "mmlab merged results")
    buf = io.StringIO()
    ReportConsole(file=buf, width=max(tr._tw.fullwidth, 220), force_terminal=tr._tw.hasmarkup,
            color_system="standard" if tr._tw.hasmarkup else None).print(st.merged.table())
    tr.write(buf.getvalue())
    ws = sorted(st.merged.workers)
    t = st.merged.totals()
    it = st.merged.items
    tr.write_line(f"{sum(it.values())} mmlab items ({it.get('passed', 0)} passed, {it.get('failed', 0)} failed, "
                  f"{it.get('skipped', 0)} skipped): {t['rounds']} rounds, {t['window_hits']} window hits, "
                  f"{t['FORBIDDEN']} FORBIDDEN, {t['INTERESTING']} INTERESTING"
                  + (f"; merged from workers {', '.join(ws)}" if ws != ["main"] else ""))
    for wid in st.crashed:
        tr.write_line(f"worker {wid} crashed: its counts are missing from the merge", red=True)
    for line in st.merged.failure_lines():
        tr.write_line(line)
    path = config.getoption("--mmlab-json")
    if path:
        tr.write_line(f"mmlab results written to {path}")
