"""The console every report prints through: rich tables that never cut a name.

Off a terminal (CI, a pipe, a file) rich draws 80 columns and cuts cells to ``popul…``. A
:class:`ReportConsole` instead

* honours COLUMNS when it is set (on a terminal or off it) in tables; off a terminal, lines of
  text are not broken at all;
* off a terminal without COLUMNS, draws each table at its natural width (a log has no right edge);
* in every table, keeps each name whole: a column is never narrower than its longest word (a
  populator, racer or kernel name, ``v6.18+per_vma_lock=off``; values and text fold between
  words, never into an ellipsis), and where the words of a table do not fit in COLUMNS the
  table is widened just as far as they need -- a cut name in a CI log is worse than a long line.

Use :func:`console` where a command would write ``Console()``.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["ReportConsole", "console", "fit_table", "NAME_MAX"]

NAME_MAX = 48  # a word longer than this may be folded (a path, a hex dump), not the whole table widened


def _plain(cell: Any) -> str:
    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        try:
            return Text.from_markup(cell).plain
        except Exception:  # noqa: BLE001 - not markup after all
            return cell
    return ""


def _longest_word(cells: list[Any]) -> int:
    return max((len(w) for c in cells for w in _plain(c).split()), default=0)


def fit_table(table: Table) -> Table:
    """Make every column at least as wide as its header and its cells' longest word (at most NAME_MAX) and fold,
    never ellipsize, what is wider than the column. Returns the same table."""
    for col in table.columns:
        words = max(_longest_word(list(col._cells)), len(_plain(col.header)))  # a header is a name too
        col.min_width = max(col.min_width or 0, min(words, NAME_MAX))
        col.overflow = "fold"
        col.no_wrap = False
    return table


class ReportConsole(Console):
    """A rich Console whose tables never cut names (see the module doc)."""

    def print(self, *objects: Any, **kw: Any) -> None:  # type: ignore[override]
        tables = [o for o in objects if isinstance(o, Table)]
        if not tables:
            super().print(*objects, **kw)
            return
        for t in tables:
            fit_table(t)
        old = self.width
        kw.setdefault("soft_wrap", False)  # soft wrap means no_wrap: nothing in a table could fold
        natural = not self.is_terminal and not _columns()  # a log has no right edge
        need = max(_lay_out(self, t, None if natural else old) for t in tables)
        self.width = max(old, need)
        try:
            super().print(*objects, **kw)
        finally:
            self.width = old


def _lay_out(con: Console, t: Table, width: Optional[int]) -> int:
    """Fix the widths of *t*'s columns for *width* (None: its natural width) and return the width
    it takes. Every column gets its longest word; what is left of *width* goes to the columns in
    proportion to how much wider their text would like to be. Rich's own collapse shrinks the
    widest columns first -- the names -- so it is not used: fixed widths say exactly what fits."""
    wide = con.options.update(width=10_000, max_width=10_000, no_wrap=False)
    ms = [t._measure_column(con, wide, c) for c in t.columns]
    lo = sum(m.minimum for m in ms)
    hi = sum(m.maximum for m in ms)
    extra = t._extra_width
    if width is None or hi + extra <= width:
        return hi + extra
    room = max(width - extra, lo) - lo
    flex = [m.maximum - m.minimum for m in ms]
    total = sum(flex) or 1
    for c, m, f in zip(t.columns, ms, flex):
        c.width = m.minimum + room * f // total - t._get_padding_width(c._index)
    return max(width, lo + extra)


def _columns() -> Optional[int]:
    c = os.environ.get("COLUMNS", "")
    return int(c) if c.isdigit() and int(c) > 0 else None


def console(**kw: Any) -> ReportConsole:
    """A :class:`ReportConsole`; keyword arguments as rich's Console (stderr=True, file=...).
    Off a terminal, lines of text are never broken (a log viewer wraps them itself)."""
    c = ReportConsole(**kw)
    if "soft_wrap" not in kw and not c.is_terminal:
        c.soft_wrap = True
    return c
