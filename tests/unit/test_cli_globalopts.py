"""Global options after the subcommand (engine/cli/globalopts.py): the value before the
subcommand wins, counts add up, lists join, and an option given nowhere gets its default."""
from __future__ import annotations

import argparse
from pathlib import Path

from certwright.engine.cli.globalopts import accept_after_subcommands, global_actions, merge_after
from certwright.engine.cli.main import parse_args


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t")
    p.add_argument("--dir", default="home")
    p.add_argument("-v", action="count", default=0)
    p.add_argument("--tag", action="append", default=[])
    p.add_argument("--json", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("one")
    two = sub.add_parser("two")
    two.add_argument("--json", action="store_true", dest="own_json")  # its own, kept
    deep = two.add_subparsers(dest="deep", required=True)
    deep.add_parser("three")
    return p


def _parse(*argv: str) -> argparse.Namespace:
    p = _parser()
    actions = global_actions(p)
    defaults = accept_after_subcommands(p)
    return merge_after(p.parse_args(argv), defaults, actions)


def test_after_is_taken_when_nothing_came_before() -> None:
    assert _parse("one", "--dir", "x").dir == "x"
    assert _parse("two", "three", "--dir", "deep").dir == "deep"


def test_before_wins_over_after() -> None:
    assert _parse("--dir", "a", "one", "--dir", "b").dir == "a"


def test_defaults_when_given_nowhere() -> None:
    args = _parse("one")
    assert (args.dir, args.v, args.tag, args.json) == ("home", 0, [], False)
    assert not any(k.endswith("__after") for k in vars(args))


def test_counts_add_and_lists_join() -> None:
    args = _parse("-v", "--tag", "x", "one", "-vv", "--tag", "y")
    assert args.v == 3
    assert args.tag == ["x", "y"]


def test_a_subcommands_own_option_of_that_spelling_is_kept() -> None:
    args = _parse("two", "--json", "three")
    assert args.own_json is True
    assert args.json is False


def test_the_real_parser_state_dir_and_log_level_after_the_subcommand(tmp_path: Path) -> None:
    """certwright's own parser: `status --state-dir X --log-level debug`, and the value
    before the subcommand kept when both are given."""
    args = parse_args(["status", "--state-dir", str(tmp_path), "--log-level", "debug"])
    assert (args.state_dir, args.log_level) == (tmp_path, "debug")
    args = parse_args(["--state-dir", str(tmp_path / "a"), "status",
                       "--state-dir", str(tmp_path / "b"), "--log-json"])
    assert args.state_dir == tmp_path / "a"
    assert args.log_json is True
