"""Every `torchyard` command says what it does in its --help (a leaf's help is its handler's docstring)
and ends it with a worked example."""

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


def _final_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every command that takes no subcommand (``runs list``, ``datastore add s3``...), and ``torchyard server``
    (it serves, and has subcommands too)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs or path == ("server",):
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _final_commands(sub, (*path, name))


def test_every_command_ends_its_help_with_a_worked_example() -> None:
    """The example is a real command line of that command: `torchyard PATH ...` after an "Example:" line."""
    missing = []
    for path, parser in _final_commands(_parser()):
        text = parser.format_help()
        _, found, example = text.partition("\nExample:\n")
        lines = [line.strip() for line in example.splitlines() if line.strip()]
        wanted = "torchyard " + " ".join(path)
        if not found or not any(line.startswith(wanted) or f"| {wanted}" in line or f"({wanted}" in line
                                or f"&& {wanted}" in line for line in lines):
            missing.append(" ".join(path))
    assert not missing, f"--help without a worked example of the command itself: {missing}"


def test_every_compute_kind_help_has_an_example() -> None:
    from torchyard.cli.compute import kind_parser
    from torchyard.compute.registry import kinds, target_class

    for kind in kinds():
        assert f"Example:\n  torchyard compute add {kind} " in kind_parser(kind, target_class(kind)).format_help()
