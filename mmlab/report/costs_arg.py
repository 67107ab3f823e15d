"""``--costs FILE``: the one argparse helper every command that takes costs uses.

``add_costs_argument(p)`` adds the option; after parsing, ``args.costs`` is a resolved
:class:`mmlab.costprofile.CostProfile` (the option, else $MMLAB_COSTS, else the default
location when a profile is there, else the built-in costs). A profile that cannot be used is an
argparse error naming the file and the field: exit 2 before anything runs.
"""

from __future__ import annotations

import argparse

from mmlab.costprofile import ENV_VAR, CostProfile, CostProfileError, default_path, resolve

__all__ = ["add_costs_argument", "costs_type"]

_UNSET = ""  # a string default, so argparse resolves it through costs_type after parsing


def costs_type(text: str) -> CostProfile:
    try:
        return resolve(text or None)
    except CostProfileError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_costs_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--costs", metavar="FILE", type=costs_type, default=_UNSET,
                   help=f"cost profile written by `mmlab calibrate` ('builtin' for the built-in costs); "
                   f"default: ${ENV_VAR}, else {default_path()} when it exists, else built-in")
