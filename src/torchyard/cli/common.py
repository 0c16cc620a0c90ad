"""What every command group shares: the workspace option, one-line errors, tables, waiting on a run.

Each group lives in a module of its own with ``register(subparsers)``; :func:`command` makes a leaf
command whose ``--help`` is its handler's docstring.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC
from typing import Any

EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


def clean_doc(text: str | None) -> str:
    """A docstring without its indentation (what ``inspect.cleandoc`` does, without importing inspect:
    ~4 ms of every CLI start)."""
    import textwrap  # noqa: PLC0415

    head, _, body = (text or "").expandtabs().partition("\n")
    return (head.strip() + "\n" + textwrap.dedent(body)).strip()


def command(subparsers: Any, name: str, handler: Handler, **kw: Any) -> argparse.ArgumentParser:
    """A leaf command: its help is the first line of ``handler``'s docstring, its description the rest."""
    doc = clean_doc(handler.__doc__)
    first, _, rest = doc.partition("\n\n")
    p: argparse.ArgumentParser = subparsers.add_parser(
        name, help=first.replace("\n", " "), description=doc.replace("\n", " ") if not rest else
        first.replace("\n", " ") + "\n\n" + rest, formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
    p.set_defaults(func=handler)
    return p


class ExampleFormatter(argparse.HelpFormatter):
    """Argparse's formatter that wraps the description as usual but keeps an ``Example:`` block (the
    epilog :func:`example` sets) line by line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("Example:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def example(p: argparse.ArgumentParser, *lines: str) -> argparse.ArgumentParser:
    """End ``p``'s ``--help`` with a worked example (for a parser not made by :func:`command`)."""
    p.epilog = "Example:\n" + "\n".join(f"  {line}" for line in lines)
    if p.formatter_class is argparse.HelpFormatter:
        p.formatter_class = ExampleFormatter
    return p


def group(subparsers: Any, name: str, help: str, dest: str) -> Any:
    """A command group (``runs``, ``env``...): without a subcommand it prints its help and exits 2."""
    p = subparsers.add_parser(name, help=help, description=help)
    p.set_defaults(func=lambda _args: _usage(p))
    return p.add_subparsers(dest=dest, metavar="SUBCOMMAND")


def _usage(p: argparse.ArgumentParser) -> int:
    print(p.format_help(), file=sys.stderr, end="")
    return EXIT_USAGE


class UsageError(Exception):
    pass


def kv(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what}: expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def workspace(args: argparse.Namespace, create: bool = False) -> Any:
    """The workspace a command works on: ``--workspace`` (a folder or a team server's URL), else
    TORCHYARD_WORKSPACE / TORCHYARD_SERVER, else ``./.torchyard`` or a parent's, else the server
    ``torchyard login`` saved. Only a command that records something (``create``: run, submit,
    ``compute add``...) makes a new ``./.torchyard``; a read command says where it looked instead."""
    import os  # noqa: PLC0415

    from torchyard.sdk import Workspace, server_url  # noqa: PLC0415
    from torchyard.workspace.workspace import WORKSPACE_DIRNAME, find_workspace  # noqa: PLC0415

    chosen = args.workspace
    if chosen is None and not os.environ.get("TORCHYARD_WORKSPACE") and not os.environ.get("TORCHYARD_SERVER") \
            and find_workspace() is None:
        from torchyard.remote.client import load_credentials  # noqa: PLC0415

        chosen = load_credentials().get("current") or None
        if chosen is None and not create:
            raise UsageError(
                f"no torchyard workspace in {os.getcwd()} or any folder above it (looked for {WORKSPACE_DIRNAME}/); "
                "`torchyard init` makes one here, or name one with --workspace PATH or TORCHYARD_WORKSPACE")
    folder = chosen if chosen is not None else os.environ.get("TORCHYARD_WORKSPACE")
    if folder and not create and not server_url(folder):
        where = os.path.abspath(os.fspath(folder))
        if not any(os.path.isfile(os.path.join(p, "workspace.json"))
                   for p in (where, os.path.join(where, WORKSPACE_DIRNAME))):
            raise UsageError(f"{where} is not a torchyard workspace (no workspace.json there or in "
                             f"{WORKSPACE_DIRNAME}/ inside it); `torchyard --workspace {folder} init` makes one")
    return Workspace(chosen)


#: the pip extra that brings each optional module
EXTRA_OF = {"starlette": "ui", "uvicorn": "ui", "numpy": "ui", "ray": "ray", "kubernetes": "kubernetes",
            "psycopg": "postgres", "s3fs": "s3", "optuna": "sweep", "mlflow": "mlflow", "torch": "examples",
            "tensorboard": "tensorboard"}


def require_extra(extra: str, what: str, *modules: str) -> None:
    """Stop with one line naming the ``pip install`` to run when ``what`` needs modules that are not
    installed, before anything is created."""
    import importlib.util  # noqa: PLC0415

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"{what} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                         f"installed: pip install \"torchyard[{extra}]\"")


def missing_module_message(err: ModuleNotFoundError) -> str:
    """One line for a module an optional feature needed: which extra to install."""
    top = (err.name or "").split(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return f"a module is missing: {err.name} (pip install {top})"
    return f"this needs {top}, which is not installed: pip install \"torchyard[{extra}]\""


def rank_arg(value: str) -> int | str:
    if value == "all":
        return "all"
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--rank: expected a rank number or 'all', got {value!r}") from None


def print_json(obj: Any, file: Any = None) -> None:
    """Strict JSON: a non-finite float is written as "Infinity", "-Infinity" or "NaN" (torchyard.limits)."""
    from torchyard.limits import encode_non_finite  # noqa: PLC0415

    print(json.dumps(encode_non_finite(obj), indent=2, default=str, allow_nan=False), file=file or sys.stdout)


#: what ``--output`` takes: ``table`` (for people; the default), ``json`` and ``yaml`` (for scripts)
OUTPUT_FORMATS = ("table", "json", "yaml")


def add_output(p: argparse.ArgumentParser, default: str = "table") -> argparse.ArgumentParser:
    """Give a command that prints an object or a list ``--output/-o table|json|yaml`` and ``--json``
    (the same as ``-o json``, kept for scripts written before ``--output``)."""
    p.add_argument("--output", "-o", choices=OUTPUT_FORMATS, default=default, metavar="FORMAT",
                   help=f"table, json or yaml (default: {default})")
    p.add_argument("--json", dest="output", action="store_const", const="json", help="the same as --output json")
    return p


def output_format(args: argparse.Namespace) -> str:
    """The format a command prints in: ``table``, ``json`` or ``yaml``."""
    return getattr(args, "output", None) or "table"


def emit(args: argparse.Namespace, obj: Any, render: Callable[[], None]) -> None:
    """Print ``obj`` as ``--output`` asks: JSON (:func:`print_json`) or YAML (:func:`print_yaml`), else
    call ``render`` to print it for people (a table or ``key: value`` lines). ``obj`` may be a callable
    that makes the object, called only for JSON and YAML."""
    fmt = output_format(args)
    if fmt in ("json", "yaml") and callable(obj):
        obj = obj()
    if fmt == "json":
        print_json(obj)
    elif fmt == "yaml":
        print_yaml(obj)
    else:
        render()


def _plain(value: Any) -> Any:
    """``value`` as plain dicts, lists, strings, numbers, booleans and None (what YAML's safe dumper takes)."""
    if isinstance(value, dict):
        return {_plain(k) if isinstance(k, str | int | float | bool) else str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):  # a str enum (RunStatus...): the safe dumper takes only plain str
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def print_yaml(obj: Any, file: Any = None) -> None:
    """YAML of the same shape as the JSON: the same keys and values; a non-finite float is YAML's own
    ``.inf``, ``-.inf`` or ``.nan``."""
    import yaml  # noqa: PLC0415

    print(yaml.safe_dump(_plain(obj), sort_keys=False, allow_unicode=True, default_flow_style=False), end="",
          file=file or sys.stdout)


def iso_utc(ts: float | None) -> str | None:
    """An epoch time (seconds) as ISO-8601 UTC, e.g. ``2026-12-07T22:00:00.123Z``; None stays None."""
    if ts is None or isinstance(ts, bool) or not isinstance(ts, int | float):
        return None
    from datetime import datetime  # noqa: PLC0415

    return datetime.fromtimestamp(float(ts), tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_key(key: str) -> str:
    """The name of the ISO-8601 field beside an epoch field: ``created_at`` → ``created_utc``,
    ``last_used`` → ``last_used_utc``."""
    return (key[:-3] if key.endswith("_at") else key) + "_utc"


def with_utc(record: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``record`` with each epoch field of ``keys`` joined by its ISO-8601 UTC twin (:func:`utc_key`),
    unless the record already has one. The epoch field stays as it is."""
    out = dict(record)
    for key in keys:
        if key in record and utc_key(key) not in record:
            out[utc_key(key)] = iso_utc(record[key])
    return out


def fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def plain_output(stream: Any = None) -> bool:
    """True when ``stream`` (stdout) gets no colours or styles: NO_COLOR is set (https://no-color.org),
    TERM is dumb, or it is not a terminal (a pipe, a file)."""
    import os  # noqa: PLC0415

    stream = stream or sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return not tty or "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb"


@contextmanager
def transfer_progress(what: str) -> Iterator[Callable[[str, int], None] | None]:
    """A progress bar on stderr for a file transfer (``Datastore.upload(..., progress=...)``): files
    done of the total and bytes, on a terminal; None (no bar) under NO_COLOR or off a terminal."""
    if plain_output(sys.stderr):
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), DownloadColumn(), transient=True,
                  console=console(sys.stderr)) as bar:
        task = bar.add_task(what, total=None)
        done = {"bytes": 0}

        def report(kind: str, value: int) -> None:
            if kind == "files":
                bar.update(task, total=value)
            else:
                done["bytes"] += value
                bar.update(task, advance=1, description=f"{what} ({done['bytes']:,} bytes)")

        yield report


def console(stream: Any = None) -> Any:
    """A rich console on ``stream`` (stdout) that writes no ANSI codes when :func:`plain_output`, and
    does not cut lines to an 80-column default when not on a terminal."""
    from rich.console import Console  # noqa: PLC0415

    stream = stream or sys.stdout
    plain = plain_output(stream)
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return Console(file=stream, width=None if tty else 250, color_system=None if plain else "auto", no_color=plain)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=title, show_edge=False, header_style="bold")
    cells = [[str(c) for c in row] for row in rows]
    for i, col in enumerate(columns):
        if i == 0:  # ids: never cut (a cut id cannot be pasted into the next command)
            table.add_column(col, no_wrap=True, min_width=max([len(col), *(len(r[0]) for r in cells)]))
        else:
            table.add_column(col, overflow="fold")
    for row in cells:
        table.add_row(*row)
    console().print(table)


def _environment_log(run: Any) -> str | None:
    """Where a run's environment build writes (``logs/environment.txt`` in its folder), when local."""
    import os  # noqa: PLC0415

    workdir = getattr(run, "workdir", None)
    try:
        return os.path.join(str(workdir), "logs", "environment.txt") if workdir else None
    except Exception:  # noqa: BLE001 - a remote run has no folder here
        return None


def wait(run: Any, stream: bool, ranks: int | str = 0) -> int:
    from torchyard.status import RunStatus  # noqa: PLC0415

    tty = sys.stderr.isatty()
    # a quiet wait on a terminal shows a spinner with the run's status (not under NO_COLOR, not off a terminal)
    spinner = console(sys.stderr).status(f"torchyard: {run.id}: waiting") \
        if tty and not stream and not plain_output(sys.stderr) else None

    def on_status(status: str) -> None:
        shown = f"torchyard: {run.id}: {status}"
        if status == RunStatus.PREPARING:  # an environment build can take minutes: say where it writes
            log = _environment_log(run)
            shown += f" (environment and inputs; the build's log: {log})" if log else ""
        if spinner is not None:
            spinner.console.print(shown, highlight=False)  # stays in the scrollback
            spinner.update(shown)
        elif tty or not stream:
            print(shown, file=sys.stderr, flush=True)

    try:
        if spinner is not None:
            spinner.start()
        details = run.wait_for_completion(show_output=stream, raise_on_error=False, ranks=ranks, on_status=on_status)
    except KeyboardInterrupt:
        if spinner is not None:
            spinner.stop()
        print(f"\ntorchyard: stopped waiting; run {run.id} goes on (`torchyard cancel {run.id}` stops it)", file=sys.stderr)
        return 130
    finally:
        if spinner is not None:
            spinner.stop()
    status = details["status"]
    if not stream:
        print(f"torchyard: {run.id}: {status}", file=sys.stderr)
    if status != RunStatus.COMPLETED:
        reason = (details.get("error") or {}).get("message") or details.get("cancel_reason") or status
        print(f"torchyard: run {run.id} ended {status}: {reason}", file=sys.stderr)
        return 1
    return 0
