"""Merged results of a seed sweep: outcome counts and HDR histograms per row, added exactly.

A *row* is one cell of a sweep -- (suite, kernel, populator, racer); a plain test that checks the
oracle is the row (test name, kernel, "-", "-"). Each pytest worker (or the single process)
fills one :class:`Results` and ships it as a dict; the controller adds them up. Counts add;
histograms add through ``HdrHistogram.add`` (the same ``encode``/``decode`` histoblobs the
latency harness uses), so the merged p99 is the p99 of every sample, not an average of p99s.

The JSON document (``--mmlab-json``, ``mmlab sweep --json``) keeps the shape of ``mmlab race
--json`` -- top level ``results``, each with ``kernel``, ``populator``, ``racer``, ``rounds``,
``window_hits`` and ``outcomes`` (``OK``, ``INTERESTING``, ``FORBIDDEN``, ``wrong_pages``) --
and adds ``suite``, ``seeds``, ``failed_seeds``, ``histograms``, every ``failures`` entry with
its replay command, and ``workers``: each worker's own counts and histoblobs, so that anyone
can check the merge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from hdrh.histogram import HdrHistogram

from mmlab.harness.histograms import decode, new_histogram, summarize

__all__ = ["RowKey", "Row", "Failure", "Results", "merge_docs", "HIST_NAMES"]

RowKey = tuple[str, str, str, str]  # suite, kernel, populator, racer
GRADES = ("OK", "INTERESTING", "FORBIDDEN")
# What the histograms of a race row hold (nanoseconds):
#   populate    -- duration of the populating call, one sample per round;
#   racer_wait  -- every mmap_sem wait of the racer task (acquired - requested);
#   max_wait    -- the longest mmap_sem wait of any task in the round, one sample per round.
HIST_NAMES = ("populate", "racer_wait", "max_wait")


@dataclass
class Row:
    """Counts of one row, over every seed that ran it."""

    suite: str
    kernel: str
    populator: str = "-"
    racer: str = "-"
    seeds: int = 0
    rounds: int = 0
    window_hits: int = 0
    overlaps: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: {g: 0 for g in GRADES})
    wrong_pages: int = 0
    max_wrong_pages: int = 0
    broken: int = 0
    hangs: int = 0
    failed_seeds: list[int] = field(default_factory=list)
    hists: dict[str, HdrHistogram] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)  # oracle finding kind -> rounds it appeared in
    calls: int = 0

    @property
    def key(self) -> RowKey:
        return (self.suite, self.kernel, self.populator, self.racer)

    def hist(self, name: str) -> HdrHistogram:
        h = self.hists.get(name)
        if h is None:
            h = self.hists[name] = new_histogram()
        return h

    def add(self, other: "Row") -> None:
        self.seeds += other.seeds
        self.rounds += other.rounds
        self.window_hits += other.window_hits
        self.overlaps += other.overlaps
        for g in GRADES:
            self.outcomes[g] += other.outcomes.get(g, 0)
        self.wrong_pages += other.wrong_pages
        self.max_wrong_pages = max(self.max_wrong_pages, other.max_wrong_pages)
        self.broken += other.broken
        self.hangs += other.hangs
        self.failed_seeds = sorted(set(self.failed_seeds) | set(other.failed_seeds))
        for k, n in other.kinds.items():
            self.kinds[k] = self.kinds.get(k, 0) + n
        self.calls += other.calls
        for name, h in other.hists.items():
            self.hist(name).add(h)

    def as_dict(self, blobs: bool = True) -> dict[str, Any]:
        hists: dict[str, Any] = {}
        for name in sorted(self.hists):
            h = self.hists[name]
            d: dict[str, Any] = dict(summarize(h))
            if blobs:
                d["blob"] = h.encode().decode()
            hists[name] = d
        return {"suite": self.suite, "kernel": self.kernel, "populator": self.populator, "racer": self.racer,
                "seeds": self.seeds, "rounds": self.rounds, "window_hits": self.window_hits,
                "overlaps": self.overlaps, "outcomes": dict(self.outcomes, wrong_pages=self.wrong_pages),
                "wrong_pages": self.wrong_pages, "max_wrong_pages": self.max_wrong_pages,
                "finding_kinds": dict(sorted(self.kinds.items())), "calls": self.calls,
                "broken": self.broken, "hangs": self.hangs, "failed_seeds": list(self.failed_seeds),
                "histograms": hists}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Row":
        r = cls(d["suite"], d["kernel"], d.get("populator", "-"), d.get("racer", "-"), int(d.get("seeds", 0)),
                int(d.get("rounds", 0)), int(d.get("window_hits", 0)), int(d.get("overlaps", 0)),
                {g: int(d.get("outcomes", {}).get(g, 0)) for g in GRADES}, int(d.get("wrong_pages", 0)),
                int(d.get("max_wrong_pages", 0)), int(d.get("broken", 0)), int(d.get("hangs", 0)),
                [int(s) for s in d.get("failed_seeds", [])])
        r.kinds = {k: int(n) for k, n in d.get("finding_kinds", {}).items()}
        r.calls = int(d.get("calls", 0))
        for name, h in d.get("histograms", {}).items():
            if "blob" in h:
                r.hists[name] = decode(h["blob"])
        return r


@dataclass
class Failure:
    """One failing test item: where, which seed, what, and how to replay it."""

    nodeid: str
    seed: Optional[int]
    kernel: str
    what: str
    message: str
    replay: list[str] = field(default_factory=list)
    token: str = ""
    suite: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"nodeid": self.nodeid, "suite": self.suite, "seed": self.seed, "kernel": self.kernel,
                "what": self.what, "message": self.message, "replay": list(self.replay), "token": self.token}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Failure":
        return cls(d["nodeid"], d.get("seed"), d.get("kernel", ""), d.get("what", ""), d.get("message", ""),
                   list(d.get("replay", [])), d.get("token", ""), d.get("suite", ""))


class Results:
    """Rows, failures and item counts of one process, or the merge of many."""

    def __init__(self) -> None:
        self.rows: dict[RowKey, Row] = {}
        self.failures: list[Failure] = []
        self.items: dict[str, int] = {"passed": 0, "failed": 0, "skipped": 0}
        self.workers: dict[str, dict[str, Any]] = {}
        self.suite_files: dict[str, str] = {}  # stress suite name -> its file
        self.first_start = 0.0  # wall-clock (epoch s) of the first item's setup, and the last teardown's end
        self.last_stop = 0.0

    def span(self, start: float, stop: float) -> None:
        """Widen the wall-clock span of the items run to include [start, stop]."""
        self.first_start = min(self.first_start, start) if self.first_start else start
        self.last_stop = max(self.last_stop, stop)

    @property
    def items_s(self) -> float:
        """Wall-clock seconds from the first item's start to the last item's end (worker start-up
        and collection excluded), over every worker."""
        return max(self.last_stop - self.first_start, 0.0)

    def row(self, suite: str, kernel: str, populator: str = "-", racer: str = "-") -> Row:
        key = (suite, kernel, populator, racer)
        r = self.rows.get(key)
        if r is None:
            r = self.rows[key] = Row(suite, kernel, populator, racer)
        return r

    def add_row(self, row: Row) -> None:
        self.row(*row.key).add(row)

    def add_failure(self, f: Failure) -> None:
        self.failures.append(f)

    def count_item(self, outcome: str) -> None:
        self.items[outcome] = self.items.get(outcome, 0) + 1

    @property
    def empty(self) -> bool:
        return not self.rows and not self.failures

    def merge(self, other: "Results") -> None:
        for row in other.rows.values():
            self.add_row(row)
        self.failures.extend(other.failures)
        for k, v in other.items.items():
            self.items[k] = self.items.get(k, 0) + v
        self.suite_files.update(other.suite_files)
        if other.first_start:
            self.span(other.first_start, other.last_stop)

    # ------------------------------------------------------------------ documents
    def as_dict(self, blobs: bool = True) -> dict[str, Any]:
        rows = sorted(self.rows.values(), key=lambda r: r.key)
        return {"results": [r.as_dict(blobs) for r in rows],
                "failures": [f.as_dict() for f in sorted(self.failures, key=lambda f: (f.nodeid, f.seed or 0))],
                "items": dict(self.items), "suite_files": dict(self.suite_files),
                "span": [self.first_start, self.last_stop]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Results":
        res = cls()
        for rd in d.get("results", []):
            res.add_row(Row.from_dict(rd))
        res.failures = [Failure.from_dict(f) for f in d.get("failures", [])]
        for k, v in d.get("items", {}).items():
            res.items[k] = int(v)
        res.suite_files = dict(d.get("suite_files", {}))
        sp = d.get("span") or [0.0, 0.0]
        res.first_start, res.last_stop = float(sp[0]), float(sp[1])
        return res

    def document(self, **meta: Any) -> dict[str, Any]:
        """The JSON document: *meta* (seeds, kernels, ...), the merged rows, and per worker."""
        doc = dict(meta)
        doc["suites"] = self.suites_view()
        doc.update(self.as_dict())
        doc["totals"] = self.totals()
        doc["items_s"] = round(self.items_s, 3)
        doc["workers"] = self.workers
        return doc

    def suites_view(self) -> list[dict[str, Any]]:
        """The merged rows of each stress suite in the shape of ``mmlab stress --json``'s
        ``suites``: status, violations (each failing seed), outcome counts, worst wait, and per
        kernel the race cells and the workload."""
        out = []
        for name in sorted(self.suite_files):
            rows = [r for r in self.rows.values() if r.suite == name]
            fails = sorted((f for f in self.failures if f.suite == name), key=lambda f: (f.kernel, f.seed or 0))
            status = "HANG" if any(f.what.startswith("HANG") for f in fails) else ("VIOLATED" if fails else "HELD")
            outcomes = {g: sum(r.outcomes[g] for r in rows) for g in GRADES}
            worst = max((r.hists["max_wait"].get_max_value() for r in rows if r.populator == "workload"
                         and "max_wait" in r.hists), default=0)
            kernels = []
            for k in sorted({r.kernel for r in rows}):
                race = [r.as_dict(blobs=False) for r in sorted(rows, key=lambda r: r.key)
                        if r.kernel == k and r.populator != "workload"]
                wl = [r.as_dict(blobs=False) for r in rows if r.kernel == k and r.populator == "workload"]
                kernels.append({"kernel": k, "race": race, "workload": wl[0] if wl else None})
            out.append({"suite": name, "file": self.suite_files[name], "status": status,
                        "violations": [f"{f.kernel} seed {f.seed}: {f.what}" for f in fails],
                        "seeds": max((r.seeds for r in rows), default=0), "outcomes": outcomes,
                        "worst_wait_ms": round(worst / 1e6, 3), "kernels": kernels})
        return out

    def totals(self) -> dict[str, int]:
        t = {"rows": len(self.rows), "seeds": 0, "rounds": 0, "window_hits": 0, "OK": 0, "INTERESTING": 0,
             "FORBIDDEN": 0, "wrong_pages": 0, "broken": 0, "hangs": 0, "failures": len(self.failures)}
        for r in self.rows.values():
            t["seeds"] += r.seeds
            t["rounds"] += r.rounds
            t["window_hits"] += r.window_hits
            for g in GRADES:
                t[g] += r.outcomes[g]
            t["wrong_pages"] += r.wrong_pages
            t["broken"] += r.broken
            t["hangs"] += r.hangs
        return t

    def write_json(self, path: str, **meta: Any) -> None:
        with open(path, "w") as f:
            json.dump(self.document(**meta), f, indent=1, default=str)

    # ------------------------------------------------------------------ display
    def table(self, title: str = "mmlab: merged results"):  # -> rich.table.Table
        from rich import box
        from rich.table import Table
        t = Table(title=title, box=box.SIMPLE_HEAD)
        for c, j in (("suite", "left"), ("kernel", "left"), ("populator", "left"), ("racer", "left"),
                     ("seeds", "right"), ("rounds", "right"), ("window hits", "right"), ("OK", "right"),
                     ("INTERESTING", "right"), ("FORBIDDEN", "right"), ("wrong pages", "right"),
                     ("failed seeds", "right"), ("populate p99", "right"), ("racer wait p99", "right"),
                     ("racer wait max", "right")):
            t.add_column(c, justify=j, no_wrap=True)  # type: ignore[arg-type]
        for r in sorted(self.rows.values(), key=lambda r: r.key):
            o = r.outcomes
            forb = f"[bold red]{o['FORBIDDEN']}[/]" if o["FORBIDDEN"] else "0"
            inter = f"[yellow]{o['INTERESTING']}[/]" if o["INTERESTING"] else "0"
            failed = f"[red]{len(r.failed_seeds)}[/]" if r.failed_seeds else "0"
            if r.broken or r.hangs:
                failed += f" ({r.broken} broken, {r.hangs} hung)"
            t.add_row(r.suite, r.kernel, r.populator, r.racer, str(r.seeds), str(r.rounds), str(r.window_hits),
                      str(o["OK"]), inter, forb, str(r.wrong_pages), failed, _ms(r, "populate", 99.0),
                      _ms(r, "racer_wait", 99.0), _ms(r, "racer_wait", 100.0))
        return t

    def failure_lines(self, limit: int = 50) -> list[str]:
        """Every failing seed with its replay command (the first *limit*)."""
        out = []
        fs = sorted(self.failures, key=lambda f: (f.nodeid, f.seed or 0))
        for f in fs[:limit]:
            seed = f"seed {f.seed}" if f.seed is not None else "no seed"
            out.append(f"FAILED {f.nodeid} ({seed}): {f.what}")
            for cmd in f.replay:
                out.append(f"    replay: {cmd}")
            if f.token:
                out.append(f"    token:  {f.token}")
        if len(fs) > limit:
            out.append(f"... and {len(fs) - limit} more failures (all of them are in the JSON file)")
        return out


def _ms(r: Row, name: str, pct: float) -> str:
    h = r.hists.get(name)
    if h is None or not h.get_total_count():
        return "-"
    v = h.get_max_value() if pct >= 100 else h.get_value_at_percentile(pct)
    return f"{v / 1e6:.3f} ms"


def merge_docs(docs: Iterable[tuple[str, dict[str, Any]]]) -> Results:
    """Results of many workers, each given as (worker id, Results.as_dict()); each worker's own
    document is kept under ``workers``."""
    total = Results()
    for wid, d in docs:
        part = Results.from_dict(d)
        total.merge(part)
        total.workers[wid] = d
    return total
