"""Controlled scheduling: the real task threads, one at a time, under a chosen strategy.

    >>> from mmlab.sched import RaceScenario, explore
    >>> r = explore(RaceScenario("v3.9", "populate-anon", "munmap-mmap"), "pct", 2000, seed=1)
    >>> r.finding.outcome.verdict, r.finding.reproduced
    ('FORBIDDEN', 10)

The pieces, bottom up: :mod:`~mmlab.sched.lockmodel` (mmap_sem's queue as the scheduler sees it),
:mod:`~mmlab.sched.controller` (schedule points, handoffs, deadlock and livelock reports), the
strategies behind :class:`~mmlab.sched.scheduler.Scheduler` (:mod:`random_walk`, :mod:`pct`,
:mod:`dfs`, :mod:`replay`), :mod:`~mmlab.sched.scenario` (what runs and how it is judged),
:mod:`~mmlab.sched.trace`, :mod:`~mmlab.sched.shrink`, :mod:`~mmlab.sched.token` and
:mod:`~mmlab.sched.explore` (what ``mmlab explore`` and ``mmlab replay`` run).
"""

from mmlab.sched.controller import Controller, Execution, TaskThreads
from mmlab.sched.dfs import DfsScheduler
from mmlab.sched.explore import ExploreResult, Finding, ReplayResult, explore, replay_token
from mmlab.sched.pct import PctScheduler, pct_bound
from mmlab.sched.random_walk import RandomScheduler
from mmlab.sched.replay import GuidedScheduler, ReplayScheduler
from mmlab.sched.scenario import Outcome, RaceScenario, Scenario, register_scenario_kind
from mmlab.sched.scheduler import Divergence, Scheduler
from mmlab.sched.token import TokenError, decode_token, encode_token

__all__ = ["Controller", "Execution", "TaskThreads", "Scheduler", "Divergence", "RandomScheduler",
           "PctScheduler", "pct_bound", "DfsScheduler", "ReplayScheduler", "GuidedScheduler", "Scenario",
           "RaceScenario", "Outcome", "register_scenario_kind", "explore", "replay_token", "ExploreResult",
           "Finding", "ReplayResult", "encode_token", "decode_token", "TokenError"]
