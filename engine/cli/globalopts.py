"""Global options (``--state-dir``, ``--config``, ``--log-level``, ...) accepted after the
subcommand too, as ``certwright status --state-dir X``.

:func:`accept_after_subcommands` copies every option of the main parser onto each
subcommand's parser (and theirs, all the way down), in a group of its own, under a
destination of its own; :func:`merge_after` then folds those into the main ones after
parsing. The contract: a value given **before** the subcommand wins over one given after
it (never overwritten); a counting option (``-v``) adds up; a repeatable one (``append``)
keeps both lists in order; an option given nowhere gets the main parser's default.

Hazards: argparse parses a subcommand's arguments into a fresh namespace and copies it over
the main one, so a copy under the same destination would overwrite the earlier value; hence
the separate destinations, and the main parser's defaults set to ``SUPPRESS`` so that
"given" can be told from "defaulted". A subcommand with an option of the same spelling of
its own (the daemon's ``--config``) keeps its own.
"""
from __future__ import annotations

import argparse
import copy
from typing import Any

_AFTER = "__after"  # suffix of the destinations of the copies


def walk(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every parser of a subcommand under it, depth first."""
    return [parser, *_subparsers(parser)]


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk of its tree
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001 - the same
            for child in dict.fromkeys(action.choices.values()):
                found += [child, *_subparsers(child)]
    return found


def global_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The main parser's options, but ``--help`` and ``--version``."""
    return [a for a in parser._actions  # noqa: SLF001 - see _subparsers
            if a.option_strings and a.dest not in ("help", "version")]


def accept_after_subcommands(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Copy the main parser's options onto every subcommand; returns their defaults (by
    destination), which the main parser itself no longer sets (see the module docstring)."""
    actions = global_actions(parser)
    defaults = {a.dest: a.default for a in actions}
    for action in actions:
        action.default = argparse.SUPPRESS
    for sub in _subparsers(parser):
        group = sub.add_argument_group("global options (also accepted before the command)")
        for action in actions:
            clone = copy.copy(action)
            clone.dest = action.dest + _AFTER
            clone.default = argparse.SUPPRESS
            clone.required = False
            try:
                group._add_action(clone)  # noqa: SLF001 - add_argument cannot take an Action
            except argparse.ArgumentError:
                continue  # the subcommand has an option of that spelling of its own
    return defaults


def merge_after(args: argparse.Namespace, defaults: dict[str, Any],
                actions: list[argparse.Action]) -> argparse.Namespace:
    """Fold the copies' values into the main destinations (before wins; counts add; lists
    join), and give the options set nowhere their defaults. Returns ``args``."""
    values = vars(args)
    for action in actions:
        dest = action.dest
        after = values.pop(dest + _AFTER, argparse.SUPPRESS)
        before = values.get(dest, argparse.SUPPRESS)
        if after is argparse.SUPPRESS:
            value = defaults[dest] if before is argparse.SUPPRESS else before
        elif before is argparse.SUPPRESS:
            value = after
        elif isinstance(action, argparse._CountAction):  # noqa: SLF001 - see _subparsers
            value = before + after
        elif isinstance(action, argparse._AppendAction):  # noqa: SLF001 - the same
            value = [*before, *after]
        else:
            value = before
        values[dest] = value
    return args
