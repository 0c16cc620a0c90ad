"""The ``torchyard`` command. Imports only argparse at start-up; each command imports what it needs.

Parsing and printing only: every command group is a module of its own (``jobs``, ``runs``, ``env``,
``datastore``, ``sweep``, ``compute``, and those in :data:`COMMAND_GROUPS`), each with
``register(subparsers)``; a leaf command's ``--help`` is its handler's docstring.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from torchyard.cli.common import EXIT_USAGE, UsageError

#: command groups that live in their own module ``torchyard.cli.<name>``: each has
#: ``register(subparsers)``, which adds its parsers with ``set_defaults(func=handler)``.
CORE_GROUPS: tuple[str, ...] = ("jobs", "runs", "env", "datastore", "sweep", "compute")
COMMAND_GROUPS: tuple[str, ...] = ("ui", "model", "service", "alert", "endpoint", "tensorboard", "server", "login",
                                   "checkpoints", "completion", "top", "quota")
#: every top-level command: (the module that registers it, its one-line help), in the order
#: ``torchyard --help`` lists them. :func:`main` imports only the module of the command given, so
#: ``torchyard --help`` and ``torchyard run ...`` build one group's parsers, not all of them
#: (tests/unit/test_cli_lazy.py keeps this table equal to what the modules register).
COMMANDS: dict[str, tuple[str, str]] = {
    'init': ('jobs', 'Make a workspace here (./.torchyard), or at --workspace PATH, and say where it is.'),
    'rerun': ('jobs', 'Clone and re-run a run: the same code snapshot, environment and inputs, with --set changes.'),
    'run': ('jobs', 'Run a script from a source folder as a tracked run.'),
    'submit': ('jobs', 'Submit a YAML job file (Azure ML v2 command job style), or a `type: sweep` file.'),
    'runs': ('runs', 'list and show runs'),
    'logs': ('runs', "Print a run's output (rank 0 by default); --follow keeps printing until the run ends."),
    'metrics': ('runs', "Print a run's metrics (rank 0 by default, --rank all for every rank)."),
    'cancel': ('runs', 'Cancel a run (idempotent): every rank on every node is stopped, the run ends Canceled.'),
    'download': ('runs', "Download a run's artifact, or every artifact under a folder."),
    'env': ('env', 'environments: list, show, register, export, prune'),
    'datastore': ('datastore', 'datastores: add, list, upload, download'),
    'sweep': ('sweep', 'sweeps (HyperDrive): show, resume, cancel'),
    'compute': ('compute', 'compute targets: add, list, show, remove'),
    'ui': ('ui', 'serve the dashboard and its JSON API (default http://127.0.0.1:8765/)'),
    'model': ('model', 'the model registry: register, list, show, download, alias'),
    'service': ('service', 'deployed model services: list, show, logs, delete'),
    'alert': ('alert', 'webhooks told of run events: add, list, remove, test, history'),
    'endpoint': ('endpoint', 'online endpoints: deployments behind one address, traffic split, mirroring'),
    'tensorboard': ('tensorboard', "start TensorBoard over runs' event files (or their metrics, exported)"),
    'server': ('server', 'the team server: users, tokens and permissions over the dashboard and the whole API'),
    'login': ('login', 'Log in to a team server and make it the default workspace when no local one is found.'),
    'logout': ('login', 'Forget the saved token of a team server (default: the current one).'),
    'checkpoints': ('checkpoints', "List a run's committed checkpoints: step, time, size, metrics and where each is kept."),
    'completion': ('completion', "Print a completion script for bash, zsh or fish, made from this torchyard's commands and flags."),
    'top': ('top', "Show every running run's nodes live: CPU, memory, disk and network I/O, and each GPU."),
    'quota': ('quota', 'per-user and per-experiment GPU and run quotas on local compute: set, list, remove'),
}


def _parser(only: str | None = None, *, lazy: bool = False) -> argparse.ArgumentParser:
    """The whole ``torchyard`` parser; with ``lazy``, only the module of command ``only`` (if it is
    one) registers its parsers, and every other command is a placeholder with its help line."""
    p = argparse.ArgumentParser(
        prog="torchyard",
        description="Run PyTorch training scripts as tracked runs: logs, metrics and outputs, locally or on a cluster.",
    )
    p.add_argument("--workspace", "-w", help="workspace folder (default: ./.torchyard or a parent's; env TORCHYARD_WORKSPACE)")
    p.add_argument("--version", action="version", version="torchyard 0.1.0")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    if not lazy:
        for module in (*CORE_GROUPS, *COMMAND_GROUPS):
            importlib.import_module(f"torchyard.cli.{module}").register(sub)
        return p
    wanted = COMMANDS.get(only or "", (None, ""))[0]
    for name, (module, text) in COMMANDS.items():
        if module == wanted:
            importlib.import_module(f"torchyard.cli.{module}").register(sub)
            wanted = None  # registered once, with all of its commands
        elif name not in sub.choices:
            sub.add_parser(name, help=text, add_help=False)
    return p


def _command_word(argv: list[str]) -> str | None:
    """The command ``argv`` names: its first word that is neither an option nor an option's value."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in ("--workspace", "-w"):
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    parser = _parser(_command_word(words), lazy=True)
    args = parser.parse_args(words)
    handler = getattr(args, "func", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    from torchyard.errors import TorchyardError  # noqa: PLC0415

    try:
        return int(handler(args))
    except (TorchyardError, UsageError) as err:
        print(f"torchyard: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `torchyard runs list | head`: the reader left; say nothing more
        _quiet_stdout()
        return 141
    except ModuleNotFoundError as err:
        from torchyard.cli.common import missing_module_message  # noqa: PLC0415

        print(f"torchyard: error: {missing_module_message(err)}", file=sys.stderr)
        return 1
    except Exception as err:
        message = _store_failure(err)
        if message is None:
            raise
        print(f"torchyard: error: {message}", file=sys.stderr)
        return 1


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush meets no broken pipe either."""
    import os  # noqa: PLC0415

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _store_failure(err: Exception) -> str | None:
    """One line for a store or disk failure (what it is and what to do), else None (a bug: raise)."""
    if not (type(err).__module__.startswith("sqlalchemy") or isinstance(err, OSError)):
        return None
    from torchyard.workspace.store import store_fault  # noqa: PLC0415

    url = ""
    try:
        from torchyard.workspace.workspace import find_workspace  # noqa: PLC0415

        found = find_workspace()
        url = f"sqlite:///{found}/store.db" if found else ""
    except OSError:
        pass
    fault = store_fault(err, url)
    if fault is not None:
        return fault
    if isinstance(err, OSError):
        where = f": {err.filename}" if err.filename else ""
        return f"{err.strerror or err}{where}"
    first = (str(getattr(err, "orig", None) or err).strip().splitlines() or [type(err).__name__])[0]
    return f"the workspace store failed: {first}"


if __name__ == "__main__":
    sys.exit(main())
