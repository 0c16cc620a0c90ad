"""References to data: :class:`DataReference` (a datastore path or a URL, and how a job reads it) and
the names and paths every data module checks the same way."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from torchyard.errors import SpecError

KINDS = ("local", "s3", "fsspec")
MODES = ("mount", "download")
DEFAULT_DATASTORE = "workspaceblobstore"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def _clean_path(path: str | None, what: str = "path") -> str:
    """A path inside a datastore: '/'-separated, no leading or trailing '/', no '..'."""
    if path is None:
        return ""
    if not isinstance(path, str):
        raise SpecError(what, f"expected a string, got {type(path).__name__}")
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise SpecError(what, f"{path!r} must stay inside the datastore (no '..')")
    return "/".join(parts)


def _is_local_url(url: str) -> bool:
    return not _SCHEME.match(url) or url.startswith("file://")


def _local_path(url: str) -> str:
    return os.path.abspath(url[len("file://") :] if url.startswith("file://") else os.path.expanduser(url))


@dataclass(frozen=True)
class DataReference:
    """One input (or output) of a job: a path in a registered datastore, or a URL, and how a run sees it.

    ``datastore`` is the datastore's name (None for a direct URL, which is then in ``url``); ``path``
    is inside the datastore ("" for its root); ``mode`` is ``mount`` (use in place) or ``download``
    (copy into the run's folder); ``path_on_compute`` optionally names the folder it lands in.
    """

    __torchyard_input__: ClassVar[bool] = True

    datastore: str | None
    path: str = ""
    mode: str = "mount"
    path_on_compute: str | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if (self.datastore is None) == (self.url is None):
            raise SpecError("datastore", "a data reference needs exactly one of a datastore name or a URL")
        if self.datastore is not None and not _NAME.match(self.datastore):
            raise SpecError("datastore", f"invalid datastore name {self.datastore!r}")
        if self.url is not None:
            if not isinstance(self.url, str) or not self.url:
                raise SpecError("url", "expected a non-empty URL or path")
            if self.path:
                raise SpecError("path", "a URL reference carries its path in the URL")
        if self.mode not in MODES:
            raise SpecError("mode", f"must be 'mount' or 'download', got {self.mode!r}")
        object.__setattr__(self, "path", _clean_path(self.path))
        if self.path_on_compute is not None:
            poc = str(self.path_on_compute)
            if os.path.isabs(poc) or not _clean_path(poc, "path_on_compute"):
                raise SpecError("path_on_compute", f"must be a relative folder name, got {poc!r}")
            object.__setattr__(self, "path_on_compute", _clean_path(poc, "path_on_compute"))

    @classmethod
    def from_url(cls, url: str, mode: str = "mount", path_on_compute: str | None = None) -> DataReference:
        """An input given by URL without a registered datastore: ``s3://bucket/prefix``, a local path
        (or ``file://``), or any fsspec URL. S3 endpoints and credentials come from the environment
        (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``...)."""
        if not isinstance(url, str) or not url.strip():
            raise SpecError("url", "expected a non-empty URL or path")
        url = url.strip()
        if _is_local_url(url):
            url = _local_path(url)
        return cls(None, "", mode, path_on_compute, url)

    def as_mount(self) -> DataReference:
        """This reference, mounted on the nodes (an object store's data is downloaded instead; see the data guide)."""
        return replace(self, mode="mount")

    def as_download(self, path_on_compute: str | None = None) -> DataReference:
        """This reference, downloaded to the nodes (to ``path_on_compute`` when given) before the script starts."""
        return replace(self, mode="download", path_on_compute=path_on_compute or self.path_on_compute)

    def to_dict(self) -> dict[str, Any]:
        """The reference as a JSON-able dict, as stored in a JobSpec."""
        out: dict[str, Any] = {
            "datastore": self.datastore,
            "path": self.path,
            "mode": self.mode,
            "path_on_compute": self.path_on_compute,
        }
        if self.url is not None:
            out["url"] = self.url
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataReference:
        """The reference :meth:`to_dict` described; SpecError naming the field otherwise."""
        if not isinstance(data, dict):
            raise SpecError("input", f"expected a mapping, got {type(data).__name__}")
        unknown = set(data) - {"datastore", "path", "mode", "path_on_compute", "url"}
        if unknown:
            raise SpecError("input", f"unknown field {sorted(unknown)[0]!r} in a data reference")
        if data.get("url") is not None and data.get("datastore") is None:
            return cls.from_url(data["url"], data.get("mode") or "mount", data.get("path_on_compute"))
        return cls(
            data.get("datastore"),
            data.get("path") or "",
            data.get("mode") or "mount",
            data.get("path_on_compute"),
            data.get("url"),
        )

    def __str__(self) -> str:
        where = self.url if self.url is not None else f"{self.datastore}:{self.path or '/'}"
        return f"{where} ({self.mode})"


# ---- datastores ---------------------------------------------------------------------------------
