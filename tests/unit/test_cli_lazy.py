"""The CLI builds only the invoked command's parsers (cli.main.COMMANDS): the table must say what the
modules register, and a lazily built parser must answer exactly as the whole one does."""

from __future__ import annotations

import argparse
import importlib

import pytest

from torchyard.cli.main import COMMAND_GROUPS, COMMANDS, CORE_GROUPS, _command_word, _parser


def test_the_table_is_what_the_modules_register() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    seen: dict[str, tuple[str, str]] = {}
    for module in (*CORE_GROUPS, *COMMAND_GROUPS):
        before = set(sub.choices)
        importlib.import_module(f"torchyard.cli.{module}").register(sub)
        helps = {a.dest: a.help for a in sub._choices_actions}
        for name in sub.choices:
            if name not in before:
                seen[name] = (module, helps[name])
    assert list(COMMANDS.items()) == list(seen.items())


def test_top_level_help_is_the_same_lazily() -> None:
    assert _parser(None, lazy=True).format_help() == _parser().format_help()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_commands_parser_is_the_same_lazily(name: str) -> None:
    def sub_help(parser: argparse.ArgumentParser) -> str:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return action.choices[name].format_help()

    assert sub_help(_parser(name, lazy=True)) == sub_help(_parser())


@pytest.mark.parametrize(
    ("argv", "word"),
    [(["--help"], None), (["run", "--wait"], "run"), (["--workspace", "ws", "runs", "list"], "runs"),
     (["-w", "ws", "cancel", "x"], "cancel"), (["--workspace=ws", "model", "list"], "model"), ([], None)],
)
def test_the_command_word(argv: list[str], word: str | None) -> None:
    assert _command_word(argv) == word
