"""``torchyard login URL`` / ``torchyard logout``: remember a team server and a token for it."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from torchyard.cli.common import command


def cmd_login(args: argparse.Namespace) -> int:
    """Log in to a team server and make it the default workspace when no local one is found.

    With --token (or TORCHYARD_TOKEN) the token is checked and saved; otherwise user and password are
    asked for and a new token (--scope, --days) is made. Saved in ~/.config/torchyard/credentials.json
    (mode 0600).

    Example:
      torchyard login https://torchyard.example.org:8765 --user alice"""
    from torchyard.errors import SpecError  # noqa: PLC0415
    from torchyard.remote.client import Client, load_credentials, normalize_url, save_credentials  # noqa: PLC0415

    url = normalize_url(args.url)
    token = args.token or os.environ.get("TORCHYARD_TOKEN")
    if not token:
        user = args.user or input("user: ")
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("password: ")
        anon = Client(url, None)
        resp = anon.request("POST", "/api/v1/login", {"user": user, "password": password}, stream=True)
        cookie = (resp.getheader("set-cookie") or "").split(";")[0]
        resp.read()
        anon.close()
        if not cookie:
            raise SpecError("login", "the server set no session")
        session = Client(url, None)
        headers = session.headers
        session.headers = lambda ctype=None: {**headers(ctype), "Cookie": cookie}  # type: ignore[method-assign]
        made = session.post("/api/v1/tokens", {"scope": args.scope, "days": args.days,
                                               "description": f"torchyard login ({os.uname().nodename})"})
        session.post("/api/v1/logout")
        token = made["token"]
    me = Client(url, token).get("/api/v1/me")
    data = load_credentials()
    data.setdefault("servers", {})[url] = {"token": token, "user": me["user"]}
    data["current"] = url
    save_credentials(data)
    print(f"torchyard: logged in to {url} as {me['user']} ({me['role']}, {me['scope']} token)")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    """Forget the saved token of a team server (default: the current one).

    Example:
      torchyard logout https://torchyard.example.org:8765"""
    from torchyard.remote.client import load_credentials, normalize_url, save_credentials  # noqa: PLC0415

    data = load_credentials()
    url = normalize_url(args.url) if args.url else data.get("current")
    if url:
        data.get("servers", {}).pop(url, None)
        if data.get("current") == url:
            data.pop("current", None)
        save_credentials(data)
        print(f"torchyard: logged out of {url}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``login`` and ``logout``."""
    p = command(subparsers, "login", cmd_login)
    p.add_argument("url", help="the team server, http(s)://HOST:PORT")
    p.add_argument("--token", default=None, help="an API token (default: env TORCHYARD_TOKEN, else ask for a password)")
    p.add_argument("--user", default=None, help="user name (asked if missing)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--scope", default="write", choices=("read", "write", "admin"), help="new token's scope")
    p.add_argument("--days", type=float, default=30.0, help="new token's lifetime in days (default 30)")
    o = command(subparsers, "logout", cmd_logout)
    o.add_argument("url", nargs="?", default=None, help="the server (default: the current one)")
