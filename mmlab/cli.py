"""The ``mmlab`` command.

Each subcommand lives in its own module with ``register(subparsers)``, which adds its parser
and sets ``func``; this file only lists them. Exit status: 0 success, 1 a finding (a verdict or
expectation failed), 2 bad arguments (nothing run), 3 a hang, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

# name -> module providing register(subparsers); order is the order --help lists them
COMMANDS: list[str] = [
    "mmlab.report.kernels_cmd",
    "mmlab.report.demo_cmd",
    "mmlab.report.latency_cmd",
    "mmlab.report.race_cmd",
    "mmlab.report.stress_cmd",
    "mmlab.report.diff_cmd",
    "mmlab.report.conform_cmd",
    "mmlab.report.real_cmd",
    "mmlab.report.compare_cmd",
    "mmlab.report.bench_cmd",
    "mmlab.report.explore_cmd",
    "mmlab.report.sweep_cmd",
    "mmlab.report.tune_cmd",
    "mmlab.report.trace_cmd",
    "mmlab.report.calibrate_cmd",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # exit 2 with a clear message, nothing run
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mmlab", description=(
        "A real multithreaded testbed for Linux mm locking: mmap_sem stalls while populating "
        "(MAP_POPULATE, MAP_LOCKED, mlockall(MCL_FUTURE), brk, mremap, remap_file_pages) and the "
        "populate-vs-replace race, under kernel profiles v3.7, v3.9-rc1, v3.9, v6.18 and 'bounded'."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `mmlab COMMAND --help` for each command's options.")
    from mmlab import __version__
    p.add_argument("--version", action="version", version=f"mmlab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for mod in COMMANDS:
        importlib.import_module(mod).register(sub)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if not getattr(args, "func", None):
        p.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
