"""``torchyard datastore ...``: register datastores, list them, upload and download files.

Hooked into the main parser with ``add_parser(subparsers)``; ``run(args, workspace)`` runs the chosen
subcommand. Bad input raises torchyard errors, which the main CLI prints as one line (exit 2).
fsspec/s3fs are imported only by the subcommands that move data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from torchyard.cli.common import add_output, emit, example, table, transfer_progress
from torchyard.errors import SpecError

EXIT_USAGE = 2


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``datastore`` and its subcommands to the main parser's ``subparsers``."""
    ds = subparsers.add_parser(
        "datastore",
        help="datastores: add, list, upload, download",
        description="Named places holding data: a local folder, an S3-compatible bucket, any fsspec URL. "
        "S3 credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a named profile; "
        "nothing secret is stored.",
    )
    ds.set_defaults(datastore_help=ds.format_help)
    sub = ds.add_subparsers(dest="datastore_command", metavar="SUBCOMMAND")

    add = sub.add_parser("add", help="register (or re-register) a datastore")
    add.set_defaults(datastore_add_help=add.format_help)
    kinds = add.add_subparsers(dest="datastore_kind", metavar="KIND")
    local = kinds.add_parser("local", help="a local folder")
    local.add_argument("name")
    local.add_argument("path", help="an existing folder")
    example(local, "torchyard datastore add local scratch /data/scratch")
    s3 = kinds.add_parser("s3", help="an S3 or S3-compatible bucket")
    s3.add_argument("name")
    s3.add_argument("--bucket", required=True)
    s3.add_argument("--prefix", help="key prefix inside the bucket (default: the whole bucket)")
    s3.add_argument(
        "--endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:9000 (default: AWS)"
    )
    s3.add_argument("--profile", help="AWS profile for credentials (default: the AWS environment variables)")
    s3.add_argument("--credentials", choices=("node", "forward", "presigned"), default="node",
                    help="on cluster nodes: their own credentials (node, default), this machine's AWS "
                         "variables handed to the run's processes in memory (forward), or none: expiring "
                         "read-only URLs per input object, signed here when the run starts (presigned)")
    example(s3, "torchyard datastore add s3 minio --bucket datasets --prefix mnist --endpoint-url http://127.0.0.1:9000")
    fs = kinds.add_parser("fsspec", help="any fsspec URL (memory://, gs://, sftp://...)")
    fs.add_argument("name")
    fs.add_argument("url")
    fs.add_argument(
        "--option", action="append", default=[], metavar="K=V", help="a storage option (no secrets)"
    )
    example(fs, "torchyard datastore add fsspec shared sftp://files.example.org/data --option port=2222")

    ls = sub.add_parser("list", help="registered datastores", description="Registered datastores: name, kind, "
                        "URL and options. -o json gives a list of {name, kind, url, options...}.")
    example(add_output(ls), "torchyard datastore list -o json")

    up = sub.add_parser("upload", help="upload a folder (or one file) to a datastore (through a team server: "
                        "the server writes it with its credentials)")
    up.add_argument("name")
    up.add_argument("src", help="a folder (its files keep their relative paths) or a file")
    up.add_argument("--target", help="path inside the datastore (default: its root)")
    example(up, "torchyard datastore upload minio ./data/mnist --target mnist/v1")

    down = sub.add_parser("download", help="download the files under a path of a datastore (through a team "
                          "server: streamed back by it)")
    down.add_argument("name")
    down.add_argument("prefix", help="path inside the datastore ('' or / for everything)")
    down.add_argument(
        "--to", default=".", help="destination folder (default: .); files keep their datastore paths"
    )
    example(down, "torchyard datastore download minio mnist/v1 --to ./data")
    return ds


def _options(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError("--option", f"expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)  # numbers, booleans, JSON objects
        except ValueError:
            out[key] = value
    return out


def run(args: argparse.Namespace, workspace: Any) -> int:
    """Run ``torchyard datastore <subcommand>``; returns the exit code."""
    from torchyard.data.datastore import Datastore, DatastoreRegistry  # noqa: PLC0415

    command = getattr(args, "datastore_command", None)
    if getattr(workspace, "is_remote", False):
        if command in ("upload", "download"):
            return _remote_transfer(args, workspace, command)
        if command in ("add", "list"):
            return _remote(args, workspace, command)
    if command == "add":
        kind = getattr(args, "datastore_kind", None)
        if kind == "local":
            ds = Datastore.register_local(workspace, args.name, args.path)
        elif kind == "s3":
            ds = Datastore.register_s3(
                workspace, args.name, args.bucket, args.prefix, args.endpoint_url, args.profile, args.credentials
            )
        elif kind == "fsspec":
            ds = Datastore.register_fsspec(workspace, args.name, args.url, **_options(args.option))
        else:
            print(args.datastore_add_help(), file=sys.stderr, end="")
            return EXIT_USAGE
        print(f"registered datastore {ds.name!r}: {ds.kind} {ds.url}{_fmt_options(ds.options)}")
        return 0
    if command == "list":
        stores = DatastoreRegistry(workspace).list()

        def render() -> None:
            if not stores:
                print("no datastores registered (the default 'workspaceblobstore' appears on first use)")
                return
            table(None, ["name", "kind", "url", "options"],
                  [[s.name, s.kind, s.url, _fmt_options(s.options).strip()[1:-1] or "-"] for s in stores])

        emit(args, [s.to_dict() for s in stores], render)
        return 0
    if command == "upload":
        ds = Datastore.get(workspace, args.name)
        src = os.path.abspath(args.src)
        if os.path.isfile(src):
            count = ds.upload_files([src], target_path=args.target)
        else:
            with transfer_progress(f"uploading to {args.name}") as progress:
                count = ds.upload(src, target_path=args.target, progress=progress)
        print(f"uploaded {count} file(s) from {src} to {ds.url_of(args.target or '')}")
        return 0
    if command == "download":
        ds = Datastore.get(workspace, args.name)
        dest = os.path.abspath(args.to)
        with transfer_progress(f"downloading from {args.name}") as progress:
            count = ds.download(dest, prefix=args.prefix, progress=progress)
        print(f"downloaded {count} file(s) from {ds.url_of(args.prefix)} to {dest}")
        return 0
    print(args.datastore_help(), file=sys.stderr, end="")
    return EXIT_USAGE


def _remote(args: argparse.Namespace, workspace: Any, command: str) -> int:
    """``add`` and ``list`` against a team server: registered there (admins), listed by name and kind."""
    stores = workspace.datastores
    if command == "list":
        found = [s.to_dict() for s in stores.list()]
        emit(args, found, lambda: table(None, ["name", "kind", "where"],
                                        [[s["name"], s["kind"], "on the server"] for s in found]))
        return 0
    kind = getattr(args, "datastore_kind", None)
    if kind == "local":
        ds = stores.register_local(args.name, args.path)
    elif kind == "s3":
        ds = stores.register_s3(args.name, args.bucket, args.prefix, args.endpoint_url, args.profile, args.credentials)
    elif kind == "fsspec":
        ds = stores.register_fsspec(args.name, args.url, **_options(args.option))
    else:
        print(args.datastore_add_help(), file=sys.stderr, end="")
        return EXIT_USAGE
    print(f"registered datastore {ds.name!r} ({ds.kind}) on the server")
    return 0


def _remote_transfer(args: argparse.Namespace, workspace: Any, command: str) -> int:
    """``upload`` and ``download`` against a team server: the files travel through the server, which
    reads and writes the datastore with its own credentials (members and admins)."""
    ds = workspace.datastores.get(args.name)
    if command == "upload":
        src = os.path.abspath(args.src)
        if not os.path.exists(src):
            raise SpecError("src", f"{args.src} does not exist")
        count = ds.upload_files([src], target_path=args.target) if os.path.isfile(src) else \
            ds.upload(src, target_path=args.target)
        print(f"uploaded {count} file(s) from {src} to {ds.name}:{args.target or '/'} on the server "
              f"({ds.last_upload_bytes} bytes sent)")
        return 0
    dest = os.path.abspath(args.to)
    count = ds.download(dest, prefix=args.prefix)
    print(f"downloaded {count} file(s) from {ds.name}:{args.prefix or '/'} on the server to {dest}")
    return 0


def _fmt_options(options: dict[str, Any]) -> str:
    return f"  ({', '.join(f'{k}={v}' for k, v in sorted(options.items()))})" if options else ""


def register(subparsers: Any) -> None:
    """Add this group to the ``torchyard`` parser; its handler runs the chosen subcommand."""
    from torchyard.cli.common import workspace  # noqa: PLC0415

    add_parser(subparsers).set_defaults(
        func=lambda args: run(args, workspace(args, create=getattr(args, "datastore_command", None) == "add")))
