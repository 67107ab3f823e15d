"""`mmlab trace --plot`: holds and waits of mmap_lock per thread on one timeline.

One row per thread: its syscalls as thin grey bars, read holds (blue) and write holds (orange) of
the lock, and its waits (red) just below them; the worst waits are labelled with the
holder they waited behind. matplotlib is the optional extra ``plot``.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["plot_trace"]


def plot_trace(tr: Any, path: str, worst: Optional[list[Any]] = None, title: str = "mmlab trace",
               min_wait_us: float = 0.0) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    t0 = tr.t0_ns if tr.t0_ns >= 0 else 0
    end = tr.t1_ns if tr.t1_ns >= 0 else t0
    busy: dict[int, float] = {}
    for r in tr.locks:
        if r.acq_ns >= 0:
            busy[r.tid] = busy.get(r.tid, 0.0) + ((r.rel_ns if r.rel_ns >= 0 else end) - r.req_ns)
    tids = sorted(tr.threads, key=lambda t: (-busy.get(t, 0.0), t))
    row = {t: i for i, t in enumerate(tids)}
    fig, ax = plt.subplots(figsize=(12, 1.6 + 0.9 * max(len(tids), 1)), constrained_layout=True)

    def ms(ns: int) -> float:
        return (ns - t0) / 1e6

    calls: dict[int, list[tuple[float, float]]] = {}
    for c in tr.calls:
        if c.enter_ns >= 0:
            e = c.exit_ns if c.exit_ns >= 0 else end
            calls.setdefault(c.tid, []).append((ms(c.enter_ns), max((e - c.enter_ns) / 1e6, 1e-4)))
    holds: dict[tuple[int, str], list[tuple[float, float]]] = {}
    waits: dict[int, list[tuple[float, float]]] = {}
    for r in tr.locks:
        if r.acq_ns < 0:
            continue
        rel = r.rel_ns if r.rel_ns >= 0 else end
        holds.setdefault((r.tid, r.mode), []).append((ms(r.acq_ns), max((rel - r.acq_ns) / 1e6, 1e-4)))
        if r.acq_ns > r.req_ns and (r.acq_ns - r.req_ns) / 1e3 >= min_wait_us:
            waits.setdefault(r.tid, []).append((ms(r.req_ns), (r.acq_ns - r.req_ns) / 1e6))
    for t, y in row.items():
        if t in calls:
            ax.broken_barh(calls[t], (y - 0.05, 0.1), color="0.75")
        for mode, color in (("R", "tab:blue"), ("W", "tab:orange")):
            if (t, mode) in holds:
                ax.broken_barh(holds[(t, mode)], (y - 0.3, 0.25), color=color)
        if t in waits:
            ax.broken_barh(waits[t], (y + 0.05, 0.25), facecolor="tab:red", linewidth=0, alpha=0.85)
    span_ms = max((end - t0) / 1e6, 1e-3)
    labelled = 0
    for w in worst or []:
        # label the waits that are visible at this scale (>= 2% of the capture), two at most
        if labelled >= 2 or w.tid not in row or not w.holders or w.wait_us / 1e3 < 0.02 * span_ms:
            continue
        h = w.holders[0]
        ax.text(ms(w.req_ns), row[w.tid] + 0.32 + 0.22 * labelled,
                f"{w.wait_us / 1e3:.1f} ms wait behind {h.name}:{h.tid} ({h.mode}) in {h.call}",
                fontsize=8, va="top", color="darkred")
        labelled += 1
    ax.set_yticks(range(len(tids)), [f"{tr.threads[t]}:{t}" for t in tids])
    ax.set_ylim(-0.6, len(tids) - 0.1)
    ax.invert_yaxis()
    ax.set_xlabel("ms since the capture began (CLOCK_MONOTONIC)")
    ax.set_title(title, fontsize=10, loc="left")
    ax.legend(handles=[Patch(color="0.75", label="mm syscall"), Patch(color="tab:blue", label="read hold"),
                       Patch(color="tab:orange", label="write hold"), Patch(color="tab:red", label="wait")],
              loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=4, fontsize=8, frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)
