"""`mmlab tune --plot`: the writer's worst wait against the populate's slowdown, one point per
switch value, the Pareto front joined, the reference kernels marked."""

from __future__ import annotations

from mmlab.harness.latency import dilation_range
from mmlab.harness.tune import TuneResult

__all__ = ["plot_tune"]


def plot_tune(res: TuneResult, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.2), constrained_layout=True)
    pts = [p for p in res.points if not p.reference and p.wait_ms is not None and p.slowdown is not None]
    refs = [p for p in res.points if p.reference and p.wait_ms is not None and p.slowdown is not None]
    names = [s.switch for s in res.sweeps]
    groups: dict[object, list] = {}
    for p in pts:  # one series per value of the second switch (or one series)
        key = p.values.get(names[1]) if len(names) > 1 else None
        groups.setdefault(key, []).append(p)
    for i, (key, ps) in enumerate(groups.items()):
        ps.sort(key=lambda p: p.values[names[0]])  # type: ignore[arg-type, return-value]
        label = f"{names[1]}={key}" if key is not None else f"{res.config.kernels[0].name}: {names[0]}"
        ax.plot([p.slowdown for p in ps], [p.wait_ms for p in ps], "o-", color=f"C{i}", alpha=0.8, label=label)
        for p in ps:
            ax.annotate(str(p.values[names[0]]), (p.slowdown, p.wait_ms), textcoords="offset points",
                        xytext=(5, 4), fontsize=8)
    front = sorted((p for p in pts if p.pareto), key=lambda p: p.slowdown)  # type: ignore[arg-type, return-value]
    if front:
        ax.plot([p.slowdown for p in front], [p.wait_ms for p in front], "-", color="k", lw=2.5, alpha=0.25,
                label="Pareto front", zorder=0)
    for j, r in enumerate(refs):
        ax.plot([r.slowdown], [r.wait_ms], "s", color="C3" if j == 0 else f"C{5 + j}", ms=9, label=r.kernel)
    # log above 10 us, linear below: a policy whose writer never waited (0) stays on the plot
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("populate slowdown (beside the victims / alone)")
    ax.set_ylabel("writer worst wait (ms, modelled; log above 0.01)")
    c = res.config
    d = dilation_range(res.runs)
    ax.set_title(f"{c.populators[0].name} {res.size >> 20} MiB: {names[0]}"
                 + (f" x {names[1]}" if len(names) > 1 else "")
                 + (f"\nmedians of {c.repeats}; dilation k {d['k_min']:.0f}-{d['k_max']:.0f} per run, residual "
                    f"<= {d['residual_ns_max'] / 1e3:.2f} us/call, hand-off <= {d['handoff_residual_ns_max'] / 1e3:.1f} us"
                    if d["residual_ns_max"] is not None else f"\nmedians of {c.repeats}; undilated"), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.savefig(path, dpi=110)
    plt.close(fig)
