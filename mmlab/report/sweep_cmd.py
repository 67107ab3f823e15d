"""`mmlab sweep`: a seed sweep of stress suites (or seeded tests) over worker processes.

The same run as ``pytest stress/ -n N --mmlab-seeds A..B`` for people who do not use pytest:
every seed of every suite (and kernel) is one pytest item, pytest-xdist spreads them over
``--workers`` processes, the mmlab plugin merges every worker's outcome counts and HDR histograms
into one table and prints each failing seed with the commands that replay it. ``--shard i/n``
runs every n-th seed from the i-th, so separate CI jobs split one sweep between them.

A suite can also be given as a race triple (``--populator``, ``--racer``, ``--kernel``), which
must never produce FORBIDDEN. Exit status: 0 every expectation held, 1 a failing seed or a known
bug not reproduced, 2 bad arguments or suites (nothing run), 3 a hang, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from mmlab.ci.seeds import format_seeds, parse_seeds, parse_shard, shard
from mmlab.harness.populators import get_populators
from mmlab.harness.racers import get_racers
from mmlab.harness.sizes import parse_size
from mmlab.kernels import parse_kernels
from mmlab.report.costs_arg import add_costs_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="a seed sweep of the stress suites over worker processes, merged (pytest-xdist)",
        description="Run every stress suite (default: stress/) once per seed and kernel, spread over worker "
        "processes by pytest-xdist, and print the merged table and every failing seed with its replay command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  mmlab sweep --seeds 0..499 --workers 2\n"
        "  mmlab sweep stress/populate-race.toml --seeds 1000 --shard 2/4 --json part2.json\n"
        "  mmlab sweep --kernel v3.9,bounded --populator populate-file --racer munmap-mmap --seeds 50")
    p.add_argument("paths", nargs="*", metavar="PATH", help="suite files, directories of them, or test files with "
                   "seeded tests (default: stress/)")
    p.add_argument("--seeds", default="20", help="N (0..N-1) or A..B inclusive (default 20)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: every "
                   "core; 1 runs in this process)")
    p.add_argument("--shard", help="i/n: run only the i-th of n shards of the seeds")
    p.add_argument("--kernel", help="kernel profiles (comma-separated; default: each suite's own)")
    p.add_argument("--populator", help="sweep a race triple instead of suite files: populators (comma-separated)")
    p.add_argument("--racer", default="munmap-mmap", help="with --populator: racers (default munmap-mmap)")
    p.add_argument("--size", default="1M", help="with --populator: the populated range (default 1M)")
    p.add_argument("--rounds", type=int, help="race rounds per seed (default: each suite's own)")
    p.add_argument("--time-scale", type=float, help="cost multiplier (default: each suite's own)")
    add_costs_argument(p)
    p.add_argument("--hang-timeout", type=float, default=60.0, help="seconds before a seed counts as hung "
                   "(default 60)")
    p.add_argument("--json", metavar="FILE", help="write the merged results as JSON")
    p.add_argument("--tb", default="no", choices=("no", "line", "short", "long"),
                   help="how much of each failure pytest prints (default: none; the summary lists every seed)")
    p.set_defaults(func=run)


def _fail(msg: str) -> int:
    print(f"mmlab sweep: error: {msg}", file=sys.stderr)
    return 2


def _plugin_args() -> list[str]:
    """Load the plugin by name: a no-op where the entry point (named as the module) loaded it."""
    return ["-p", "mmlab.pytest_plugin"]


def _triple_suite(args: argparse.Namespace, tmp: Path) -> Path:
    kernels = [k.name for k in parse_kernels(args.kernel or "all")]
    pops = [p.name for p in get_populators(args.populator)]
    racers = [r.name for r in get_racers(args.racer)]
    size = parse_size(args.size)
    d = tmp / "stress"
    d.mkdir()
    f = d / "sweep.toml"
    q = lambda xs: "[" + ", ".join(f'"{x}"' for x in xs) + "]"  # noqa: E731
    ts = args.time_scale if args.time_scale is not None else 0.1
    f.write_text(f'[suite]\nname = "sweep"\nkernels = {q(kernels)}\ntime_scale = {ts}\n\n'
                 f'[[race]]\npopulators = {q(pops)}\nracers = {q(racers)}\nsize = {size}\nrounds = {args.rounds or 4}\n'
                 '[race.expect.default]\nnever = ["FORBIDDEN"]\n')
    return d


class _Grab:
    """A pytest plugin object that keeps the session's merged results for the sweep's summary."""

    def __init__(self) -> None:
        self.merged: Any = None
        self.items = 0

    def pytest_collection_finish(self, session: Any) -> None:
        self.items = len(session.items)

    def pytest_unconfigure(self, config: Any) -> None:
        from mmlab.pytest_plugin import state_key
        st = config.stash.get(state_key, None)
        if st is not None:
            self.merged = st.merged


def run(args: argparse.Namespace) -> int:
    try:
        seeds = parse_seeds(args.seeds)
        if args.shard:
            seeds = shard(seeds, *parse_shard(args.shard))
        if args.kernel:
            parse_kernels(args.kernel)
        if args.populator:
            get_populators(args.populator)
            get_racers(args.racer)
            parse_size(args.size)
    except ValueError as e:
        return _fail(str(e))
    if args.workers < 1:
        return _fail("--workers must be >= 1")
    if args.rounds is not None and args.rounds <= 0:
        return _fail("--rounds must be positive")
    if args.time_scale is not None and not args.time_scale >= 0:
        return _fail("--time-scale must be >= 0")
    if not args.hang_timeout > 0:
        return _fail("--hang-timeout must be positive")
    if args.populator and args.paths:
        return _fail("give suite files or --populator, not both")
    try:
        import pytest  # noqa: F401
        if args.workers > 1:
            import xdist  # noqa: F401
    except ImportError as e:
        return _fail(f"mmlab sweep runs on pytest and pytest-xdist ({e}); pip install 'mmlab[dev]'")
    if args.populator:  # the suite stays on disk: the replay commands of failing seeds name it
        paths = [str(_triple_suite(args, Path(tempfile.mkdtemp(prefix="mmlab-sweep-"))))]
    else:
        paths = args.paths or ["stress"]
        missing = [p for p in paths if not Path(p).exists()]
        if missing:
            return _fail(f"no such suite file or directory: {', '.join(missing)}"
                         + (" (run from the project root, or name the suites)" if paths == ["stress"] else ""))
    return _sweep(args, paths, seeds)


def _sweep(args: argparse.Namespace, paths: list[str], seeds: range) -> int:
    import pytest
    argv = [*paths, *_plugin_args(), "-q", "-p", "no:cacheprovider", "-o", "addopts=", f"--tb={args.tb}",
            "--mmlab-seeds", args.seeds, "--mmlab-hang-timeout", str(args.hang_timeout)]
    if args.shard:
        argv += ["--mmlab-shard", args.shard]
    if not any(p.endswith(".py") for p in paths):  # suites only: hypothesis's plugin costs seconds per worker
        argv += ["-p", "no:hypothesispytest"]
    if importlib.util.find_spec("pytest_timeout") is not None:
        argv += ["--timeout", str(int(args.hang_timeout * 2 + 30))]
    argv += ["-n", str(args.workers)] if args.workers > 1 else ["-p", "no:xdist"]
    if args.kernel and not args.populator:
        argv += ["--mmlab-kernels", args.kernel]
    if args.rounds is not None:
        argv += ["--mmlab-rounds", str(args.rounds)]
    if args.time_scale is not None and not args.populator:
        argv += ["--mmlab-time-scale", str(args.time_scale)]
    if args.json:
        argv += ["--mmlab-json", args.json]
    if not args.costs.builtin:
        argv += ["--mmlab-costs", args.costs.path]
    print(f"mmlab sweep: seeds {format_seeds(seeds)}, {args.workers} worker(s); {args.costs.header}: "
          f"pytest {' '.join(argv)}", flush=True)
    grab = _Grab()
    t0 = time.perf_counter()
    code = int(pytest.main(argv, plugins=[grab]))
    wall = time.perf_counter() - t0
    merged = grab.merged
    if code == pytest.ExitCode.INTERRUPTED:
        return 130
    if code in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.NO_TESTS_COLLECTED):
        print("mmlab sweep: error: nothing to run (see pytest's message above)", file=sys.stderr)
        return 2
    if code == pytest.ExitCode.INTERNAL_ERROR:
        return 2
    n = sum(merged.items.values()) if merged is not None else grab.items
    busy = merged.items_s if merged is not None else 0.0
    print(f"mmlab sweep: {n} items (suite x kernel x seed) in {wall:.1f} s: {n / wall if wall else 0:.2f} items/s "
          f"with {args.workers} worker(s); {n / busy if busy else 0:.2f} items/s from the first item to the last "
          f"({busy:.1f} s, start-up excluded)")
    if merged is not None and (merged.totals()["hangs"] or any(f.what.startswith("HANG") for f in merged.failures)):
        return 3
    if code == pytest.ExitCode.TESTS_FAILED:
        return 1
    return 0 if code == pytest.ExitCode.OK else 1


def throughput(paths: list[str], seeds: str, workers: int,
               extra: Optional[list[str]] = None) -> tuple[int, float, float]:
    """(items, wall seconds, seconds from the first item to the last) of one quiet sweep: what
    ``mmlab bench`` can measure."""
    import contextlib
    import io

    import pytest
    argv = [*paths, *_plugin_args(), "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-o", "addopts=",
            "--tb=no", "--mmlab-seeds", seeds, *(extra or [])]
    argv += ["-n", str(workers)] if workers > 1 else ["-p", "no:xdist"]
    grab = _Grab()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        pytest.main(argv, plugins=[grab])
    wall = time.perf_counter() - t0
    m = grab.merged
    return (sum(m.items.values()) if m is not None else grab.items), wall, (m.items_s if m is not None else 0.0)
