"""Named JSON records in a folder: the one small implementation under the workspace's registries
(compute targets, datastores, environments). L0: imports only ``errors``.

A record is ``<root>/<name>.json`` (or ``<root>/<name>/<version>.json`` for versioned kinds),
written atomically (a temporary file, then a rename); names are checked against one pattern, so a
name can never reach outside the folder.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from torchyard.errors import NotFoundError, SpecError, WorkspaceError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def valid_name(name: object) -> bool:
    return isinstance(name, str) and bool(NAME.match(name)) and ".." not in name


class JsonRecords:
    """``<root>/<name>.json`` records of one kind (``what`` names the kind in messages)."""

    def __init__(self, root: str, what: str) -> None:
        self.root = root
        self.what = what

    def path(self, name: str, version: str | None = None) -> str:
        if version is None:
            return os.path.join(self.root, f"{name}.json")
        return os.path.join(self.root, name, f"{version}.json")

    def check_name(self, name: object) -> str:
        if not valid_name(name):
            raise SpecError("name", f"invalid {self.what} name {name!r}: use letters, digits, '_', '-' or '.', "
                                    "starting with a letter or digit")
        return str(name)

    def put(self, name: str, record: dict[str, Any], version: str | None = None, *, exclusive: bool = False) -> bool:
        """Write a record atomically. With ``exclusive`` an existing one is kept and False returned."""
        self.check_name(name)
        path = self.path(name, version)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(record, fh, indent=2)
        if not exclusive:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # fails when another writer got there first
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    def get(self, name: str, version: str | None = None, *, hint: str = "") -> dict[str, Any]:
        if not self.exists(name, version):
            known = ", ".join(self.names()) or "none"
            raise NotFoundError(f"no {self.what} {name!r} in this workspace (known: {known}){hint}")
        path = self.path(name, version)
        try:
            with open(path) as fh:
                record: dict[str, Any] = json.load(fh)
        except (OSError, ValueError) as err:
            raise WorkspaceError(f"{self.what} {name!r}: {path} is unreadable ({err}); register it again") from None
        return record

    def exists(self, name: object, version: str | None = None) -> bool:
        return valid_name(name) and os.path.isfile(self.path(str(name), version))

    def remove(self, name: str) -> None:
        if not self.exists(name):
            raise NotFoundError(f"no {self.what} {name!r} in this workspace")
        os.unlink(self.path(name))

    def names(self) -> list[str]:
        try:
            entries = os.listdir(self.root)
        except OSError:
            return []
        flat = {e[:-5] for e in entries if e.endswith(".json") and valid_name(e[:-5])}
        versioned = {e for e in entries if valid_name(e) and self.versions(e)}
        return sorted(flat | versioned)

    def versions(self, name: str) -> list[str]:
        """The versions of a versioned record, numbers first in order, then other labels."""
        try:
            entries = os.listdir(os.path.join(self.root, name))
        except OSError:
            return []
        found = [e[:-5] for e in entries if e.endswith(".json")]
        return sorted(found, key=lambda v: (0, int(v), "") if v.isdigit() else (1, 0, v))
