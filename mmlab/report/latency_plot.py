"""`mmlab latency --plot`: worst wait against populate size (log-log), and one run's timeline.

matplotlib is an optional extra (``pip install 'mmlab[plot]'``); :func:`have_matplotlib` lets the
command refuse ``--plot`` up front, before anything runs.
"""

from __future__ import annotations

import importlib.util
from typing import Optional

from mmlab.harness.latency import LatencyResult, RunResult, dilation_range

__all__ = ["have_matplotlib", "plot_latency"]


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def plot_latency(res: LatencyResult, path: str, timeline: Optional[RunResult] = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    pops = list(dict.fromkeys(r.populator for r in res.runs))
    ncols = max(len(pops), 1)
    fig = plt.figure(figsize=(4.2 * ncols, 8.5), constrained_layout=True)
    gs = fig.add_gridspec(2, ncols, height_ratios=[1.3, 1])
    kernels = [k.name for k in res.config.kernels]
    colors = {k: f"C{i}" for i, k in enumerate(kernels)}
    for i, p in enumerate(pops):
        ax = fig.add_subplot(gs[0, i])
        for k in kernels:
            rs = sorted((r for r in res.runs if r.kernel == k and r.populator == p and r.reason == "done"),
                        key=lambda r: r.size_bytes)
            if not rs:
                continue
            xs = [r.size_bytes / (1 << 20) for r in rs]
            for op, ls in (("writer", "-"), ("fault", "--"), ("vma-mprotect", ":")):
                if all(r.worst_wait_us(op) is None for r in rs):
                    continue  # a victim not run (vma-mprotect: the vma-writer, --victims)
                ys = [max(r.worst_wait_us(op) or 0.0, 1.0) / 1e3 for r in rs]
                ax.plot(xs, ys, ls, marker="o", color=colors[k], label=f"{k} {op}")
            top = [r for r in rs if r.size_bytes == rs[-1].size_bytes and r.slowdown is not None]
            if top:  # the populate's own price at the largest size, beside the writer's point
                sl = sorted(r.slowdown for r in top)[len(top) // 2]  # type: ignore[type-var]
                w = max(top[0].worst_wait_us("writer") or 0.0, 1.0) / 1e3
                ax.annotate(f"populate {sl:.2f}\u00d7", (xs[-1], w), textcoords="offset points", xytext=(-4, 5),
                            ha="right", fontsize=7, color=colors[k])
        ax.set_xscale("log")
        ax.set_yscale("log")
        sizes = sorted({r.size_bytes / (1 << 20) for r in res.runs if r.populator == p})
        ax.set_xticks(sizes, [f"{x:g}" for x in sizes])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        d = dilation_range(res.runs)
        ax.set_title(p + (f"\n(dilation k {d['k_min']:.0f}-{d['k_max']:.0f}, residual <= "
                          f"{d['residual_ns_max'] / 1e3:.1f} us/call)" if d["residual_ns_max"] is not None
                          else "\n(undilated)"), fontsize=9)
        ax.set_xlabel("populate size (MiB)")
        if i == 0:
            ax.set_ylabel("worst mmap_sem wait (ms; no wait drawn at 1 us)")
        ax.grid(True, which="both", alpha=0.3)
        if i == ncols - 1:
            ax.legend(fontsize=7, loc="center right")  # the decades between the two groups are empty
    ax = fig.add_subplot(gs[1, :])
    if timeline is not None and timeline.spans:
        tasks = list(dict.fromkeys(s.task for s in timeline.spans))
        for y, task in enumerate(tasks):
            mine = [s for s in timeline.spans if s.task == task and s.acq_ns >= 0]
            waits = [(s.req_ns / 1e6, (s.acq_ns - s.req_ns) / 1e6) for s in mine if s.acq_ns > s.req_ns]
            for mode, col in (("R", "tab:blue"), ("W", "tab:red")):
                holds = [(s.acq_ns / 1e6, max((s.rel_ns - s.acq_ns) / 1e6, 0.002)) for s in mine if s.mode == mode]
                ax.broken_barh(holds, (y - 0.3, 0.6), color=col, label=f"hold {mode}" if y == 0 else None)
            ax.broken_barh(waits, (y - 0.12, 0.24), color="0.6", label="wait" if y == 0 else None)
        ax.set_yticks(range(len(tasks)), tasks)
        ax.set_xlabel("ms since the start of the run")
        ax.set_title(f"timeline: {timeline.kernel}, {timeline.populator}, "
                     f"{timeline.size_bytes >> 20} MiB (mmap_sem holds and waits per task)")
        ax.legend(fontsize=7, loc="upper right")
    else:
        ax.set_axis_off()
    fig.savefig(path, dpi=110)
    plt.close(fig)
