"""rich tables for `mmlab latency`: one per populator, then the verdicts."""

from __future__ import annotations

from typing import Optional

from rich.table import Table

from mmlab.harness.latency import VICTIM_OPS, LatencyResult, RunResult

__all__ = ["populator_table", "verdict_table", "fmt_us", "size_text", "percentile_cells"]

_ROW_OPS = VICTIM_OPS + ("writer", "vma-mprotect")


def fmt_us(us: Optional[float]) -> str:
    """A duration given in microseconds, in the unit that reads best."""
    if us is None:
        return "-"
    if us < 1:
        return "0"
    if us < 1000:
        return f"{us:.0f}us"
    if us < 100_000:
        return f"{us / 1e3:.2f}ms"
    return f"{us / 1e3:.0f}ms"


def percentile_cells(s: dict) -> list[str]:  # type: ignore[type-arg]
    """p50, p99, p99.9 and max of a summary as text, no percentile above the exact max: HDR gives
    a bucket's highest equivalent value (and a wait recorded as at least 1 us reads 1us beside a
    max of 0), so each is clamped to the max and a zero shows as 0 in every column."""
    top = float(s["max_us"])
    return [fmt_us(min(float(s[k]), top)) for k in ("p50_us", "p99_us", "p999_us")] + [fmt_us(top)]


def size_text(n: int) -> str:
    if n >= 1 << 30 and n % (1 << 30) == 0:
        return f"{n >> 30}G"
    if n >= 1 << 20:
        return f"{n / (1 << 20):g}M"
    return f"{n >> 10}K"


def _op_rows(t: Table, kernel: str, size: str, pop: str, r: RunResult, style: str = "") -> None:
    first = True
    alone = fmt_us(r.alone_ms * 1e3) if r.alone_ms is not None else "-"
    slow = f"{r.slowdown:.2f}x" if r.slowdown is not None else "-"
    for op in _ROW_OPS:
        s = r.victim.get(op)
        if not s or not s.get("count"):
            continue
        wall = s.get("wall", {})
        t.add_row(kernel if first else "", size if first else "", pop if first else "",
                  alone if first else "", slow if first else "", op, str(s["count"]), *percentile_cells(s),
                  fmt_us(wall.get("max_us")) if isinstance(wall, dict) else "-",
                  style=style, end_section=False)
        first = False


def populator_table(res: LatencyResult, populator: str) -> Table:
    """kernel x size x victim op -> p50/p99/p99.9/max lock wait, and the populator's own time.

    The first rows of each kernel are its noise floor (the victims alone)."""
    ts = res.config.costs.time_scale
    t = Table(title=f"{populator}: victims' mmap_sem wait (time scale {ts:g})", title_justify="left")
    for c in ("kernel", "size", "populate", "alone", "slowdown", "op", "n", "p50", "p99", "p99.9", "max wait",
              "max wall"):
        t.add_column(c, justify="left" if c in ("kernel", "op") else "right")
    noise = {r.kernel: r for r in res.noise}
    kernels = [k.name for k in res.config.kernels]
    for k in kernels:
        nf = noise.get(k)
        if nf is not None:
            _op_rows(t, k, "noise", "-", nf, style="dim")
        for r in sorted((r for r in res.runs if r.kernel == k and r.populator == populator),
                        key=lambda r: r.size_bytes):
            pop = fmt_us(r.populate_ms * 1e3) + ("" if r.reason == "done" else f" ({r.reason})")
            _op_rows(t, "" if nf is not None else k, size_text(r.size_bytes), pop, r)
        t.add_section()
    return t


def verdict_table(res: LatencyResult) -> Table:
    t = Table(title="Verdicts: does the worst wait grow with the populate size?  (unbounded: log-log slope >= 1/3 "
              "and >= 25% of the populate time; waits below the noise median count as that)",
              title_justify="left")
    for c in ("kernel", "populator", "victim", "verdict", "worst wait by size", "noise p50/p99/max", "growth", "slope",
              "share"):
        t.add_column(c, justify="left" if c in ("kernel", "populator", "victim", "verdict") else "right")
    for v in res.verdicts:
        worst = " / ".join(fmt_us(w) for w in v.worst_us)
        verdict = "[green]bounded[/green]" if v.bounded else "[bold red]UNBOUNDED[/bold red]"
        t.add_row(v.kernel, v.populator, v.op, verdict, worst, f"{fmt_us(v.floor_us)}/{fmt_us(v.noise_p99_us)}/{fmt_us(v.noise_max_us)}", f"x{v.growth:.1f}",
                  f"{v.slope:.2f}", f"{v.share:.0%}")
    return t
