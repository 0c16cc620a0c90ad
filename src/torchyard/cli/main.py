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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="torchyard",
        description="Run PyTorch training scripts as tracked runs: logs, metrics and outputs, locally or on a cluster.",
    )
    p.add_argument("--workspace", "-w", help="workspace folder (default: ./.torchyard or a parent's; env TORCHYARD_WORKSPACE)")
    p.add_argument("--version", action="version", version="torchyard 0.1.0")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for module in (*CORE_GROUPS, *COMMAND_GROUPS):
        importlib.import_module(f"torchyard.cli.{module}").register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
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
