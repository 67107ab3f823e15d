"""The console every report prints through: rich tables that never cut a name.

Off a terminal (CI, a pipe, a file) rich draws 80 columns and cuts cells to ``popul…``. A
:class:`ReportConsole` instead

* honours COLUMNS when it is set (on a terminal or off it);
* off a terminal without COLUMNS, draws each table at its natural width (a log has no right edge);
* in every table, keeps each name whole: a column is never narrower than its longest word (a
  populator, racer or kernel name, ``v6.18+per_vma_lock=off``), and what does not fit folds
  onto the next line instead of ending in an ellipsis.

Use :func:`console` where a command would write ``Console()``.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from rich.console import Console
from rich.measure import Measurement
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
    """Make every column at least as wide as its cells' longest word (at most NAME_MAX) and fold,
    never ellipsize, what is wider than the column. Returns the same table."""
    for col in table.columns:
        words = _longest_word(list(col._cells))  # names; a header may fold
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
        if not self.is_terminal and not _columns():
            wide = self.options.update(width=10_000, max_width=10_000)
            self.width = max(old, max(Measurement.get(self, wide, t).maximum for t in tables))
        else:
            for t in tables:  # names whole on one line where they fit; folded where they cannot
                if _min_width(t) > self.width:
                    for col in t.columns:
                        col.min_width = None
        try:
            super().print(*objects, **kw)
        finally:
            self.width = old


def _min_width(t: Table) -> int:
    """The width *t* needs with every column at its min_width: cells, padding and rules."""
    pad = t.padding[1] + t.padding[3] if t.pad_edge else 0
    return sum((c.min_width or 1) + pad for c in t.columns) + len(t.columns) + 1


def _columns() -> Optional[int]:
    c = os.environ.get("COLUMNS", "")
    return int(c) if c.isdigit() and int(c) > 0 else None


def console(**kw: Any) -> ReportConsole:
    """A :class:`ReportConsole`; keyword arguments as rich's Console (stderr=True, file=...).
    Off a terminal without COLUMNS, lines of text are not broken at 80 columns either."""
    c = ReportConsole(**kw)
    if "soft_wrap" not in kw and not c.is_terminal and not _columns():
        c.soft_wrap = True
    return c
