"""`mmlab kernels`: the profiles and their switches, as a table or JSON."""

from __future__ import annotations

import argparse
import json

from mmlab.kernels import KERNELS, SWITCH_DOCS, PATCH_ALIASES, get_kernel


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kernels", help="list kernel profiles and their behaviour switches",
                       description="List the kernel profiles (one switch per patch of the mm_populate() "
                       "series, plus later kernels and our 'bounded' proposal). A profile can be "
                       "changed switch by switch anywhere a kernel is named: v3.7+patch3, "
                       "v3.9-rc1+vm_populate=off, bounded+populate_batch_pages=64.")
    p.add_argument("kernel", nargs="*", help="profiles or specs to show (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        kernels = [get_kernel(k) for k in args.kernel] if args.kernel else list(KERNELS.values())
    except ValueError as e:
        print(f"mmlab kernels: {e}")
        return 2
    if args.json:
        print(json.dumps([{"name": k.name, "description": k.description, "switches": k.switches()}
                          for k in kernels], indent=2))
        return 0
    from mmlab.report.console import console
    from rich.table import Table

    aliases = {v: k for k, v in PATCH_ALIASES.items()}
    t = Table(title="kernel profiles", show_lines=False)
    t.add_column("switch")
    for k in kernels:
        t.add_column(k.name, justify="center")
    t.add_column("what it changes")
    for name, doc in SWITCH_DOCS.items():
        cells = []
        for k in kernels:
            v = getattr(k, name)
            cells.append("[green]on[/]" if v is True else "[dim]off[/]" if v is False else
                         (str(v) if v else "[dim]0[/]"))
        label = name + (f" ({aliases[name]})" if name in aliases else "")
        t.add_row(label, *cells, doc)
    c = console()
    c.print(t)
    for k in kernels:
        c.print(f"[bold]{k.name}[/]: {k.description}")
    return 0
