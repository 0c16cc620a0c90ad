"""``torchyard model ...``: register, list, show, download, alias, tag and delete model versions."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from torchyard.cli.common import add_output, emit, example, table, with_utc
from torchyard.errors import SpecError


def _workspace(args: argparse.Namespace, create: bool = False) -> Any:
    """The workspace (a folder, or a team server: --workspace URL, TORCHYARD_SERVER, a login)."""
    from torchyard.cli.common import workspace  # noqa: PLC0415

    return workspace(args, create=create)


def _kv(items: list[str], field: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(field, f"expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def parse_ref(ref: str, alias: str | None = None) -> tuple[str, int | None, str | None]:
    """``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS`` → (name, version, alias)."""
    name, at, ref_alias = ref.partition("@")
    if at:
        return name, None, ref_alias
    name, colon, version = name.partition(":")
    if colon:
        try:
            number = int(version)
        except ValueError:
            raise SpecError("model", f"expected NAME, NAME:VERSION or NAME@ALIAS, got {ref!r}") from None
        return name, number, alias
    return name, None, alias


def get_model(ws: Any, ref: str, alias: str | None = None) -> Any:
    from torchyard.models.model import Model  # noqa: PLC0415

    name, version, alias = parse_ref(ref, alias)
    return Model(ws, name, version=version, alias=alias)


def register(subparsers: Any) -> None:
    """Add ``model`` and its subcommands to the top-level parser."""
    m = subparsers.add_parser(
        "model",
        help="the model registry: register, list, show, download, alias",
        description="Registered models: integer versions per name, content-addressed files, tags, aliases.",
    )
    m.set_defaults(func=lambda _a: (m.print_help(), 2)[1])
    sub = m.add_subparsers(dest="model_command", metavar="SUBCOMMAND")

    r = sub.add_parser("register", help="register a file or folder (or a run's artifact) as a new version")
    r.add_argument("name", help="model name")
    r.add_argument("path", help="a file or folder; with --run, the run's artifact path (e.g. outputs/model.pt)")
    r.add_argument("--run", help="register the artifact PATH of this run (lineage to the run and experiment)")
    r.add_argument("--tag", action="append", default=[], metavar="K=V", help="a tag (repeatable)")
    r.add_argument("--property", action="append", default=[], metavar="K=V", help="a property (repeatable)")
    r.add_argument("--description", help="a description")
    r.add_argument("--framework", help="the model framework, e.g. PyTorch")
    add_output(r)
    r.set_defaults(func=cmd_register)
    example(r, "torchyard model register digits outputs/model.pt --run digits_1733600000_ab12cd34 --tag stage=dev")

    ls = sub.add_parser("list", help="registered versions, by name, newest first")
    ls.add_argument("--name", help="only this model")
    ls.add_argument("--tag", action="append", default=[], metavar="K[=V]", help="must have this tag (repeatable)")
    ls.add_argument("--latest", action="store_true", help="only each name's newest version")
    add_output(ls)
    ls.set_defaults(func=cmd_list)
    example(ls, "torchyard model list --name digits --tag stage=dev -o json")

    sh = sub.add_parser("show", help="one version's record (NAME, NAME:VERSION or NAME@ALIAS)")
    sh.add_argument("model", help="NAME (latest), NAME:VERSION or NAME@ALIAS")
    add_output(sh)
    sh.set_defaults(func=cmd_show)
    example(sh, "torchyard model show digits@champion -o yaml")

    d = sub.add_parser("download", help="write a version's file or folder into a folder")
    d.add_argument("model", help="NAME (latest), NAME:VERSION or NAME@ALIAS")
    d.add_argument("--to", default=".", help="destination folder (default: .)")
    d.add_argument("--overwrite", action="store_true", help="replace what is there")
    d.set_defaults(func=cmd_download)
    example(d, "torchyard model download digits:2 --to ./serving")

    a = sub.add_parser("alias", help="point an alias at a version, remove it, or show its history")
    a.add_argument("model", help="NAME:VERSION to point at (NAME with --remove/--history)")
    a.add_argument("alias", nargs="?", help="the alias, e.g. champion")
    a.add_argument("--remove", action="store_true", help="remove the alias")
    a.add_argument("--history", action="store_true", help="print every (re-)point of the name's aliases")
    a.set_defaults(func=cmd_alias)
    example(a, "torchyard model alias digits:2 champion", "torchyard model alias digits champion --history")

    t = sub.add_parser("tag", help="set or remove tags of a version")
    t.add_argument("model", help="NAME:VERSION")
    t.add_argument("--set", action="append", default=[], metavar="K=V", help="set a tag (repeatable)")
    t.add_argument("--remove", action="append", default=[], metavar="K", help="remove a tag (repeatable)")
    t.set_defaults(func=cmd_tag)
    example(t, "torchyard model tag digits:2 --set stage=prod --remove candidate")

    rm = sub.add_parser("delete", help="delete a version (refused while a service uses it)")
    rm.add_argument("model", help="NAME:VERSION")
    rm.set_defaults(func=cmd_delete)
    example(rm, "torchyard model delete digits:1")


def _record(model: Any) -> dict[str, Any]:
    """A version's JSON shape: its record, with created_utc (ISO-8601) beside created_at."""
    return with_utc(model.serialize(), "created_at")


def _print(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    def render() -> None:
        for key, value in doc.items():
            print(f"{key:12} {json.dumps(value) if isinstance(value, dict | list) else value}")

    emit(args, doc, render)


def cmd_register(args: argparse.Namespace) -> int:
    from torchyard.models.model import Model  # noqa: PLC0415

    ws = _workspace(args, create=True)
    tags, props = _kv(args.tag, "tag"), _kv(args.property, "property")
    if args.run:
        model = ws.get_run(args.run).register_model(
            args.name, args.path, tags=tags, properties=props, description=args.description,
            model_framework=args.framework,
        )
    else:
        model = Model.register(ws, args.path, args.name, tags=tags, properties=props,
                               description=args.description, model_framework=args.framework)
    emit(args, _record(model), lambda: print(f"registered {model.id} (sha256 {model.sha256[:16]}…)"))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from torchyard.models.model import Model  # noqa: PLC0415

    tags: list[Any] = []
    for item in args.tag:
        key, sep, value = item.partition("=")
        tags.append([key, value] if sep else key)
    found = Model.list(_workspace(args), name=args.name, tags=tags or None, latest=args.latest)

    def render() -> None:
        if not found:
            print("no models registered")
            return
        table(None, ["id", "run", "aliases", "tags"],
              [[m.id, m.run_id or "-", ",".join(m.aliases) or "-",
                ",".join(f"{k}={v}" for k, v in sorted(m.tags.items())) or "-"] for m in found])

    emit(args, [_record(m) for m in found], render)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    model = get_model(_workspace(args), args.model)
    _print(args, _record(model))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    model = get_model(_workspace(args), args.model)
    print(model.download(args.to, exist_ok=args.overwrite))
    return 0


def cmd_alias(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    if args.history:
        from torchyard.models.model import registry  # noqa: PLC0415

        name = parse_ref(args.model)[0]
        for event in registry(ws).alias_history(name, args.alias):
            target = f"{name}:{event['version']}" if event["version"] is not None else "(removed)"
            print(f"{event['time']:.3f} {event['alias']} -> {target}")
        return 0
    if not args.alias:
        raise SpecError("alias", "give the alias to set (or --history)")
    if args.remove:
        from torchyard.models.model import registry  # noqa: PLC0415

        registry(ws).remove_alias(parse_ref(args.model)[0], args.alias)
        print(f"removed alias {args.alias}")
        return 0
    name, version, _ = parse_ref(args.model)
    if version is None:
        raise SpecError("model", f"give NAME:VERSION to point {args.alias!r} at, got {args.model!r}")
    model = get_model(ws, args.model)
    model.set_alias(args.alias)
    print(f"{name}@{args.alias} -> {model.id}")
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    model = get_model(_workspace(args), args.model)
    if args.set:
        model.update(tags=_kv(args.set, "set"))
    if args.remove:
        model.remove_tags(args.remove)
    print(json.dumps(model.tags))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    if parse_ref(args.model)[1] is None:
        raise SpecError("model", f"give NAME:VERSION to delete, got {args.model!r}")
    model = get_model(_workspace(args), args.model)
    model.delete()
    print(f"deleted {model.id}", file=sys.stderr)
    return 0
