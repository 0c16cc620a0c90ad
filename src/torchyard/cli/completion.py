"""``torchyard completion bash|zsh|fish``: a shell completion script made from the real parser.

The script holds the command tree as it is when it is printed (commands, subcommands, every flag, the
choices of flags that have them, and the compute-target kinds installed then with their options); no
Python runs at completion time. Print it again after an upgrade.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from typing import Any

from torchyard.cli.common import command

SHELLS = ("bash", "zsh", "fish")


@dataclass
class Node:
    """One command of the tree: its subcommands and positional choices (word → help), its flags, and the
    flags' choices."""

    subcommands: dict[str, str] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    takes_value: set[str] = field(default_factory=set)
    choices: dict[str, list[str]] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)


_SAFE = re.compile(r"^[A-Za-z0-9_.:@/+=-]+$")


def tree(parser: argparse.ArgumentParser) -> dict[str, Node]:
    """Every command path (``""`` for ``torchyard`` itself, ``"runs list"``...) and what it takes."""
    out: dict[str, Node] = {}

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        node = out.setdefault(path, Node())
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help or "" for a in action._choices_actions}
                for name, sub in action.choices.items():
                    node.subcommands[name] = helps.get(name, "")
                    walk(sub, f"{path} {name}".strip())
                continue
            if not action.option_strings and action.choices is not None:  # a positional with choices
                for choice in action.choices:
                    node.subcommands.setdefault(str(choice), action.help if isinstance(action.help, str) else "")
            for flag in action.option_strings:
                node.flags.append(flag)
                node.helps[flag] = action.help if isinstance(action.help, str) else ""
                if action.nargs != 0:
                    node.takes_value.add(flag)
                if action.choices is not None:
                    node.choices[flag] = [str(c) for c in action.choices]

    walk(parser, "")
    _compute_kinds(out)
    return out


def _compute_kinds(out: dict[str, Node]) -> None:
    """``compute add KIND``: the installed kinds and each one's flags (made from its declared options)."""
    add = out.get("compute add")
    if add is None:
        return
    try:
        from torchyard.cli.compute import kind_parser  # noqa: PLC0415
        from torchyard.compute.registry import kinds, target_class  # noqa: PLC0415

        for kind in kinds():
            if kind == "local":
                continue
            add.subcommands[kind] = f"attach a {kind} target"
            sub = Node()
            for action in kind_parser(kind, target_class(kind))._actions:
                for flag in action.option_strings:
                    sub.flags.append(flag)
                    sub.helps[flag] = action.help if isinstance(action.help, str) else ""
                    if action.nargs != 0:
                        sub.takes_value.add(flag)
                    if action.choices is not None:
                        sub.choices[flag] = [str(c) for c in action.choices]
            out[f"compute add {kind}"] = sub
    except Exception:  # noqa: BLE001 - a broken third-party kind must not cost the rest of the script
        return


def _words(items: list[str]) -> str:
    return " ".join(w for w in items if _SAFE.match(w))


def bash_script(parser: argparse.ArgumentParser, prog: str = "torchyard") -> str:
    """The bash completion script (``complete -F``; bash 4 or later)."""
    nodes = {f"{prog} {path}".strip(): n for path, n in tree(parser).items()}  # bash keys cannot be empty
    subs = "\n".join(f'        ["{path}"]="{_words(list(n.subcommands))}"' for path, n in nodes.items())
    flags = "\n".join(f'        ["{path}"]="{_words(n.flags)}"' for path, n in nodes.items())
    choices = "\n".join(f'        ["{path} {flag}"]="{_words(values)}"'
                        for path, n in nodes.items() for flag, values in n.choices.items())
    values = "\n".join(f'        ["{path} {flag}"]=1' for path, n in nodes.items() for flag in sorted(n.takes_value)
                       if flag not in n.choices)
    fn = "_" + re.sub(r"\W", "_", prog)
    return f"""# {prog} completion for bash (and zsh through bashcompinit): made by `{prog} completion bash`.
# Load it with:  source <({prog} completion bash)   or save it under ~/.local/share/bash-completion/completions/{prog}
{fn}() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="" path="{prog}" word key i skip=0
    (( COMP_CWORD > 0 )) && prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local -A ty_subs=(
{subs}
    )
    local -A ty_flags=(
{flags}
    )
    local -A ty_choices=(
{choices}
    )
    local -A ty_values=(
{values}
    )
    for (( i = 1; i < COMP_CWORD; i++ )); do
        word="${{COMP_WORDS[i]}}"
        if (( skip )); then skip=0; continue; fi
        if [[ "$word" == -* ]]; then
            [[ -n "${{ty_values["$path $word"]+set}}${{ty_choices["$path $word"]+set}}" ]] && skip=1
            continue
        fi
        key="$path $word"
        [[ -n "${{ty_subs["$key"]+set}}" ]] && path="$key"
    done
    if [[ -n "${{ty_choices["$path $prev"]+set}}" ]]; then
        COMPREPLY=( $(compgen -W "${{ty_choices["$path $prev"]}}" -- "$cur") )
        return 0
    fi
    [[ -n "${{ty_values["$path $prev"]+set}}" ]] && return 0  # a value: the shell's own (file) completion
    if [[ "$cur" == -* ]]; then
        COMPREPLY=( $(compgen -W "${{ty_flags["$path"]}}" -- "$cur") )
    else
        COMPREPLY=( $(compgen -W "${{ty_subs["$path"]}}" -- "$cur") )
    fi
    return 0
}}
complete -o default -o bashdefault -F {fn} {prog}
"""


def zsh_script(parser: argparse.ArgumentParser, prog: str = "torchyard") -> str:
    """The zsh completion script: the bash one through zsh's ``bashcompinit``."""
    return (f"#compdef {prog}\n# {prog} completion for zsh: made by `{prog} completion zsh`.\n"
            f"# Load it with:  source <({prog} completion zsh)   (after compinit)\n"
            "autoload -U +X bashcompinit && bashcompinit\n" + bash_script(parser, prog))


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish_script(parser: argparse.ArgumentParser, prog: str = "torchyard") -> str:
    """The fish completion script: one ``complete`` line per subcommand and per flag of each command."""
    nodes = tree(parser)
    fn = "__" + re.sub(r"\W", "_", prog) + "_at"
    lines = [
        f"# {prog} completion for fish: made by `{prog} completion fish`.",
        f"# Load it with:  {prog} completion fish > ~/.config/fish/completions/{prog}.fish",
        f"set -g {fn}_paths " + " ".join(_fish_quote(p) for p in nodes if p),
        f"function {fn} --description 'is the command line at this {prog} command?'",
        "    set -l path ''",
        "    for word in (commandline -opc)[2..-1]",
        "        string match -q -- '-*' $word; and continue",
        "        set -l key (string trim -- \"$path $word\")",
        f"        contains -- $key ${fn}_paths; and set path $key",
        "    end",
        "    test \"$path\" = \"$argv[1]\"",
        "end",
    ]
    for path, node in nodes.items():
        cond = _fish_quote(f"{fn} {_fish_quote(path)}")
        for name, help_text in node.subcommands.items():
            lines.append(f"complete -c {prog} -f -n {cond} -a {_fish_quote(name)} -d {_fish_quote(help_text[:60])}")
        for flag in node.flags:
            if flag.startswith("--"):
                spec = f"-l {_fish_quote(flag[2:])}"
            elif len(flag) == 2:
                spec = f"-s {_fish_quote(flag[1:])}"
            else:
                spec = f"-o {_fish_quote(flag[1:])}"
            if flag in node.choices:
                spec += f" -x -a {_fish_quote(' '.join(node.choices[flag]))}"
            elif flag in node.takes_value:
                spec += " -r"
            lines.append(f"complete -c {prog} -n {cond} {spec} -d {_fish_quote((node.helps.get(flag) or '')[:60])}")
    return "\n".join(lines) + "\n"


def cmd_completion(args: argparse.Namespace) -> int:
    """Print a completion script for bash, zsh or fish, made from this torchyard's commands and flags.

    The script completes commands, subcommands, flags and the values of flags with a fixed set of
    choices (-o table|json|yaml...); print it again after upgrading torchyard or installing a new
    compute-target kind.

    Example:
      source <(torchyard completion bash)        # in ~/.bashrc
      torchyard completion fish > ~/.config/fish/completions/torchyard.fish"""
    from torchyard.cli.main import _parser  # noqa: PLC0415

    make = {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}[args.shell]
    print(make(_parser()), end="")
    return 0


def register(sub: Any) -> None:
    """Add ``completion`` to the top-level parser."""
    p = command(sub, "completion", cmd_completion)
    p.add_argument("shell", choices=SHELLS, help="bash, zsh or fish")
