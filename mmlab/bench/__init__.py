"""``mmlab bench``: a benchmark suite (not tests) measuring the model against its goals.

Each benchmark module registers itself in :data:`REGISTRY` on import; :func:`run_benchmark`
measures one (warm-up, then at least five runs, median/min/max, a verdict per goal).
"""

from mmlab.bench.registry import REGISTRY, Benchmark, Goal, Row, Run, benchmark, pending, select
from mmlab.bench.runner import MIN_RUNS, RowResult, machine_info, run_benchmark
from mmlab.bench import syscalls, populate, locks, features, trace  # noqa: F401,E402 - registration

__all__ = ["REGISTRY", "Benchmark", "Goal", "Row", "Run", "benchmark", "pending", "select",
           "run_benchmark", "RowResult", "machine_info", "MIN_RUNS"]
