"""Reports in a CI log: rich tables never cut a name off a terminal (issue 12 item 10)."""

from __future__ import annotations

import io

import pytest
from rich.table import Table

from mmlab.report.console import console

NAMES = ("v6.18+per_vma_lock=off", "populate-file", "remap-file-pages", "mremap-fixed", "munmap-mmap")


def _table() -> Table:
    t = Table(title="populate vs replacement")
    for c in ("kernel", "populator", "racer", "rounds", "window hit", "OK", "INTERESTING", "FORBIDDEN", "ERROR",
              "wrong pages", "timing", "racer wait"):
        t.add_column(c)
    t.add_row(NAMES[0], NAMES[1], NAMES[3], "4", "4", "0", "0", "[red]4[/]", "0", "15083", "traced", "1.2ms / 2us")
    t.add_row("real", NAMES[2], NAMES[4], "4", "0", "4", "0", "0", "0", "0", "wall", "9.87ms / -")
    return t


def _render(monkeypatch: pytest.MonkeyPatch, columns: str | None) -> str:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    buf = io.StringIO()  # not a terminal, as in CI or a pipe
    console(file=buf).print(_table())
    return buf.getvalue()


def test_off_a_terminal_a_table_is_drawn_at_its_width_with_every_name_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _render(monkeypatch, None)
    assert "…" not in out
    for n in NAMES:
        assert n in out
    assert max(len(line) for line in out.splitlines()) > 80  # widened, not squeezed into 80


def test_a_narrow_columns_folds_values_and_widens_only_as_far_as_the_names_need(
        monkeypatch: pytest.MonkeyPatch) -> None:
    natural = max(len(line) for line in _render(monkeypatch, None).splitlines())
    out = _render(monkeypatch, "60")
    assert "…" not in out
    for n in NAMES:
        assert n in out  # whole, on one line
    width = max(len(line) for line in out.splitlines())
    assert 60 < width < natural  # values and headers folded between words first


def test_a_wide_columns_keeps_names_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _render(monkeypatch, "200")
    assert max(len(line) for line in out.splitlines()) <= 200
    for n in NAMES:
        assert n in out


def test_every_report_command_prints_through_the_shared_console() -> None:
    import pathlib
    import re
    root = pathlib.Path(__file__).resolve().parents[2] / "mmlab" / "report"
    direct = [p.name for p in root.glob("*_cmd.py")
              if re.search(r"\bConsole\(", p.read_text()) and p.name != "explore_cmd.py"]  # explore: no tables
    assert direct == []
