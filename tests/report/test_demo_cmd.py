"""`mmlab demo`: the quick look reports modelled times on a dilated clock, the populate alone and
its slowdown; bounded's writer waits a batch where v6.18's waits out the populate."""

from __future__ import annotations

import pytest

from mmlab.cli import main
from mmlab.report.demo_cmd import demo_once

pytestmark = pytest.mark.timeout(120)


def test_writer_waits_the_populate_on_v618_and_a_batch_on_bounded() -> None:
    # 32 MiB at time scale 0.5: a 6.5 ms modelled populate; bounded yields every 512 pages (0.4 ms)
    r618 = demo_once("v6.18", 32, 0.5, k=16.0)
    rb = demo_once("bounded", 32, 0.5, k=16.0)
    assert r618["mmap+munmap"] > 0.5 * r618["populate"], r618
    assert rb["mmap+munmap"] < r618["mmap+munmap"] / 3, (rb, r618)
    alone = demo_once("bounded", 32, 0.5, k=16.0, victims=False)
    assert alone["mmap+munmap"] == 0 and alone["fault"] == 0  # nobody ran beside it
    assert 0.5 * alone["populate"] < rb["populate"] < 2 * alone["populate"], (rb, alone)


def test_cli_prints_alone_slowdown_and_the_dilation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--kernel", "v6.18", "--size", "8", "--dilation", "8"]) == 0
    out = capsys.readouterr().out
    assert "alone ms" in out and "slowdown" in out and "dilated k 8.0-8.0" in out and "residual" in out


@pytest.mark.parametrize("args", [["--size", "0"], ["--time-scale", "0"], ["--dilation", "0.5"],
                                  ["--kernel", "v9.99"]])
def test_bad_arguments_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", *args]) == 2
    assert "error" in capsys.readouterr().err
