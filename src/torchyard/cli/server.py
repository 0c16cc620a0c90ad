"""``torchyard server``: the team server (users, tokens, permissions) and its administration.

``torchyard server [--host H] [--port P] [--db URL] [--artifacts WHERE]`` serves; the subcommands
work on the server's database directly (run them where the server runs): ``create-admin``, ``user``,
``token``, ``grant``, ``audit``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from typing import Any

from torchyard.cli.common import add_output, clean_doc, command, emit, fmt_time, table, with_utc


def _store_args(p: argparse.ArgumentParser, top: bool = False) -> None:
    default = None if top else argparse.SUPPRESS  # a subcommand's copy never overwrites the group's value
    p.add_argument("--db", dest="server_db", default=default, metavar="URL",
                   help="the server's database (PostgreSQL URL; default: the workspace's own, SQLite)")
    p.add_argument("--workspace", dest="server_workspace", default=default, metavar="DIR",
                   help="the server's workspace folder (as the global --workspace)")


def _access(args: argparse.Namespace) -> Any:
    from torchyard.sdk import Workspace  # noqa: PLC0415
    from torchyard.workspace.access import AccessStore  # noqa: PLC0415

    folder = getattr(args, "server_workspace", None) or args.workspace
    ws = Workspace(path=folder, db_url=getattr(args, "server_db", None))
    if getattr(ws, "is_remote", False):
        from torchyard.errors import SpecError  # noqa: PLC0415

        raise SpecError("--workspace", "server administration works on the server's own folder and database")
    return AccessStore(ws.store.engine)


def _password(args: argparse.Namespace, what: str) -> str:
    from torchyard.errors import SpecError  # noqa: PLC0415

    if args.password_stdin or not sys.stdin.isatty():  # piped: the first line is the password
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise SpecError("password", "standard input gave no password line (pipe one in, or run in a terminal)")
        return password
    first = getpass.getpass(f"password for {what}: ")
    if getpass.getpass("again: ") != first:
        from torchyard.errors import SpecError  # noqa: PLC0415

        raise SpecError("password", "the two entries differ")
    return first


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the team server: the dashboard and the whole /api/v1 behind users and tokens.

    Binds 127.0.0.1 by default; --host 0.0.0.0 serves other machines (every request needs a token or
    a login). Runs' supervisors and sweep controllers run on this machine, against its workspace.

    Example:
      torchyard server --host 0.0.0.0 --port 8765 --db postgresql://ty@db/torchyard"""
    from torchyard.cli.common import require_extra  # noqa: PLC0415
    from torchyard.errors import SpecError  # noqa: PLC0415

    require_extra("ui", "the team server", "starlette", "uvicorn", "numpy")
    from torchyard.server.serve import serve_team  # noqa: PLC0415

    if not 0 <= args.port <= 65535:
        raise SpecError("--port", f"must be between 0 and 65535, got {args.port}")
    if args.report_url is not None and not args.report_url.startswith(("http://", "https://")):
        raise SpecError("--report-url", f"expected http(s)://HOST:PORT, got {args.report_url!r}")
    serve_team(args.server_workspace or args.workspace, host=args.host, port=args.port, db=args.server_db,
               artifacts=args.artifacts, extra_hosts=args.allowed_host, report_url=args.report_url)
    return 0


def cmd_create_admin(args: argparse.Namespace) -> int:
    """Create an admin user (the first one: there is no default password).

    Reads the password twice from the terminal, or once from standard input with --password-stdin.

    Example:
      echo "$ADMIN_PASSWORD" | torchyard server create-admin alice --password-stdin"""
    access = _access(args)
    access.add_user(args.name, _password(args, args.name), "admin")
    access.audit(None, "user.add", args.name, role="admin", via="cli")
    print(f"torchyard: admin {args.name} created")
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    """Add a user with a role: admin, member (creates experiments) or viewer (reads what it is granted).

    Example:
      torchyard server user add bob --role viewer"""
    access = _access(args)
    access.add_user(args.name, _password(args, args.name), args.role)
    access.audit(None, "user.add", args.name, role=args.role, via="cli")
    print(f"torchyard: user {args.name} ({args.role}) created")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    """List the users and their roles.

    Example:
      torchyard server user list -o json"""
    rows = _access(args).list_users()
    emit(args, [with_utc(r, "created_at") for r in rows], lambda: table(
        None, ["user", "role", "created", "disabled"],
        [[r["name"], r["role"], fmt_time(r["created_at"]), "yes" if r["disabled"] else ""] for r in rows]))
    return 0


def cmd_user_role(args: argparse.Namespace) -> int:
    """Change a user's role.

    Example:
      torchyard server user role bob member"""
    access = _access(args)
    access.set_role(args.name, args.role)
    access.audit(None, "user.role", args.name, role=args.role, via="cli")
    print(f"torchyard: {args.name} is now {args.role}")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    """Create an API token for a user (printed once; only its hash is stored).

    Example:
      torchyard server token create bob --scope read --days 30 --description ci-reader"""
    from torchyard.errors import SpecError  # noqa: PLC0415

    if args.days <= 0:
        raise SpecError("--days", "must be positive")
    access = _access(args)
    token_id, token = access.create_token(args.user, scope=args.scope, expires_in=args.days * 86400,
                                          description=args.description)
    access.audit(None, "token.create", token_id, user=args.user, scope=args.scope, via="cli")
    emit(args, {"id": token_id, "token": token, "scope": args.scope}, lambda: print(token))
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    """List tokens (ids, scopes, expiry; never their secrets).

    Example:
      torchyard server token list bob"""
    rows = _access(args).list_tokens(args.user)
    now = time.time()
    emit(args, [with_utc(r, "created_at", "expires_at", "revoked_at") for r in rows], lambda: table(
        None, ["id", "user", "scope", "kind", "expires", "state"],
        [[r["id"], r["user_name"], r["scope"], r["kind"], fmt_time(r["expires_at"]),
          "revoked" if r["revoked_at"] else "expired" if r["expires_at"] and r["expires_at"] <= now else "valid"]
         for r in rows]))
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    """Revoke a token by its id.

    Example:
      torchyard server token revoke 3f9c2a1b"""
    access = _access(args)
    access.revoke_token(args.token_id)
    access.audit(None, "token.revoke", args.token_id, via="cli")
    print(f"torchyard: token {args.token_id} revoked")
    return 0


def cmd_grant(args: argparse.Namespace) -> int:
    """Give a user READ, EDIT or MANAGE on an experiment (none removes the grant).

    Example:
      torchyard server grant digits bob READ"""
    access = _access(args)
    level = None if args.level.lower() == "none" else args.level.upper()
    access.grant(args.experiment, args.user, level, by=None)
    access.audit(None, "grant.set" if level else "grant.remove", args.experiment, user=args.user, level=level,
                 via="cli")
    print(f"torchyard: {args.user} has {level or 'no grant'} on {args.experiment}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Show the audit log, newest first.

    Example:
      torchyard server audit --limit 20 -o json"""
    rows = _access(args).audit_entries(args.limit)
    emit(args, [with_utc(r, "ts") for r in rows], lambda: table(
        None, ["time", "user", "action", "target", "detail"],
        [[fmt_time(r["ts"]), r["user_name"] or "(cli)", r["action"], r["target"] or "", r["detail"] or ""]
         for r in rows]))
    return 0


def _doc(handler: Any) -> str:
    first, _, rest = clean_doc(handler.__doc__).partition("\n\n")
    return first.replace("\n", " ") + ("\n\n" + rest if rest else "")


def register(subparsers: Any) -> None:
    """Add ``server`` (serve, create-admin, user, token, grant, audit) to the top-level parser."""
    p = subparsers.add_parser(
        "server", help="the team server: users, tokens and permissions over the dashboard and the whole API",
        description=_doc(cmd_serve), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--artifacts", default=None, metavar="WHERE",
                   help="where run artifacts go: 'local' (the workspace folder), a registered datastore's "
                   "name, or s3://BUCKET/PREFIX (endpoint from TORCHYARD_ARTIFACTS_ENDPOINT)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="another Host header name to answer (e.g. a reverse proxy's); repeatable")
    p.add_argument("--report-url", default=None, metavar="URL",
                   help="where nodes that report over HTTP reach this server (default: the URL it prints)")
    _store_args(p, top=True)
    p.set_defaults(func=cmd_serve)
    sub = p.add_subparsers(dest="server_command", metavar="SUBCOMMAND")

    c = command(sub, "create-admin", cmd_create_admin)
    c.add_argument("name", help="the admin's user name")
    c.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    _store_args(c)

    users = sub.add_parser("user", help="add and list users, change roles", description="Users of the team server.")
    users.set_defaults(func=lambda _a: (users.print_help(sys.stderr), 2)[1])
    usub = users.add_subparsers(dest="user_command", metavar="SUBCOMMAND")
    ua = command(usub, "add", cmd_user_add)
    ua.add_argument("name", help="user name")
    ua.add_argument("--role", default="member", choices=("admin", "member", "viewer"), help="role (default member)")
    ua.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    _store_args(ua)
    ul = command(usub, "list", cmd_user_list)
    add_output(ul)
    _store_args(ul)
    ur = command(usub, "role", cmd_user_role)
    ur.add_argument("name", help="user name")
    ur.add_argument("role", choices=("admin", "member", "viewer"), help="the new role")
    _store_args(ur)

    tokens = sub.add_parser("token", help="create, list and revoke API tokens", description="API tokens.")
    tokens.set_defaults(func=lambda _a: (tokens.print_help(sys.stderr), 2)[1])
    tsub = tokens.add_subparsers(dest="token_command", metavar="SUBCOMMAND")
    tc = command(tsub, "create", cmd_token_create)
    tc.add_argument("user", help="whose token")
    tc.add_argument("--scope", default="write", choices=("read", "write", "admin"), help="scope (default write)")
    tc.add_argument("--days", type=float, default=90.0, help="days until it expires (default 90)")
    tc.add_argument("--description", default=None, help="what it is for")
    add_output(tc)
    _store_args(tc)
    tl = command(tsub, "list", cmd_token_list)
    tl.add_argument("user", nargs="?", default=None, help="only this user's")
    add_output(tl)
    _store_args(tl)
    tr = command(tsub, "revoke", cmd_token_revoke)
    tr.add_argument("token_id", help="the token's id (the part after ty_)")
    _store_args(tr)

    g = command(sub, "grant", cmd_grant)
    g.add_argument("experiment", help="experiment name")
    g.add_argument("user", help="user name")
    g.add_argument("level", help="READ, EDIT, MANAGE or none")
    _store_args(g)

    a = command(sub, "audit", cmd_audit)
    a.add_argument("--limit", type=int, default=100, help="entries (default 100)")
    add_output(a)
    _store_args(a)
