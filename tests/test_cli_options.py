"""``add_options``: each kind of table row makes the option its argparse call would."""

from __future__ import annotations

import argparse

import pytest

from icbpl.cli._types import add_options, number


def _actions(parser: argparse.ArgumentParser) -> list[tuple[object, ...]]:
    return [
        (a.option_strings, a.dest, a.default, a.type, a.choices, a.metavar, a.help, type(a))
        for a in parser._actions
        if a.dest != "help"
    ]


def test_each_kind_of_row_is_the_argparse_call_it_stands_for() -> None:
    size = number(int, 8)
    by_table = argparse.ArgumentParser()
    add_options(
        by_table,
        {
            (("-q", "--quiet"), bool, None): "no bars",
            ("--size", size, "PX"): "side",
            ("--seed", size, "S", 0): "seed (default: 0)",
            ("--map", ("tsne", "pca"), None, "tsne"): "map",
            ("--dir", None, "DIR"): "folder",
            ("--hidden", bool, None, None): "hidden files",
        },
    )
    by_hand = argparse.ArgumentParser()
    by_hand.add_argument("-q", "--quiet", action="store_true", help="no bars")
    by_hand.add_argument("--size", type=size, metavar="PX", help="side")
    by_hand.add_argument("--seed", type=size, metavar="S", default=0, help="seed (default: 0)")
    by_hand.add_argument("--map", choices=("tsne", "pca"), default="tsne", help="map")
    by_hand.add_argument("--dir", metavar="DIR", help="folder")
    by_hand.add_argument("--hidden", action="store_true", default=None, help="hidden files")
    assert _actions(by_table) == _actions(by_hand)
    assert by_table.format_help() == by_hand.format_help()


def test_number_says_what_it_expected() -> None:
    parse = number(float, 0.0, strict=True)
    assert parse("0.5") == 0.5
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected a number > 0.0, got 0.0"):
        parse("0")
    with pytest.raises(argparse.ArgumentTypeError, match="expected an integer, got 'x'"):
        number(int, 0, noun="an integer")("x")
