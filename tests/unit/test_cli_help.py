"""Every `torchyard` command says what it does in its --help (a leaf's help is its handler's docstring)."""

from __future__ import annotations

import argparse

from torchyard.cli.main import _parser


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), helps.get(name), sub
                yield from _leaves(sub, (*path, name))


def test_every_command_has_help() -> None:
    missing = [" ".join(path) for path, help_text, _sub in _leaves(_parser()) if not (help_text or "").strip()]
    assert not missing, f"commands without help: {missing}"


def test_leaf_commands_run_their_handler() -> None:
    parser = _parser()
    for argv in (["runs", "list"], ["env", "list"], ["cancel", "x"], ["logs", "x"], ["compute", "list"],
                 ["sweep", "show", "x"], ["datastore", "list"]):
        assert callable(getattr(parser.parse_args(argv), "func", None)), argv
