"""The model registry's persistence: versions, tags, properties and aliases in the metadata store,
files in the snapshot store's content-addressed objects.

A version's files are a snapshot manifest: registering bytes already in the store (from a run's code
snapshot or an earlier version) writes nothing new. Versions are immutable and numbered per name from
1 (``model_names.next_version``; a number is never reused, even after a delete). Tags are mutable,
properties add-only, an alias points at one version and every re-point is kept in
``model_alias_events``. Works on SQLite and PostgreSQL (the writes that must not race take the
name's row ``FOR UPDATE``; on SQLite every write transaction is ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import builtins
import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, insert, select, update

from torchyard.errors import NotFoundError, SpecError, WorkspaceError
from torchyard.workspace.schema import (
    model_alias_events,
    model_aliases,
    model_names,
    model_properties,
    model_tags,
    models,
)

if TYPE_CHECKING:
    from torchyard.workspace.snapshots import SnapshotStore
    from torchyard.workspace.store import Store

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,127}$")


def check_model_name(name: Any, field_name: str = "model_name") -> str:
    """A model name: letters, digits, ``_ - .``, starting with a letter or digit, at most 128."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SpecError(
            field_name, f"invalid model name {name!r}: use letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return name


def check_alias(alias: Any) -> str:
    """An alias: starts with a letter (so it never reads as a version number)."""
    if not isinstance(alias, str) or not _ALIAS_RE.match(alias):
        raise SpecError("alias", f"invalid alias {alias!r}: use letters, digits, '_' or '-', starting with a letter")
    return alias


def str_dict(value: Any, field_name: str) -> dict[str, str]:
    """A dict of strings from a user's mapping (None → {}); anything else is a SpecError."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(field_name, f"must be a dict of strings, got {type(value).__name__}")
    return {str(k): str(v) for k, v in value.items()}


@dataclass
class ModelRecord:
    """One registered model version, as stored."""

    name: str
    version: int
    manifest_id: str
    sha256: str
    size: int
    file_count: int
    kind: str
    file_name: str
    run_id: str | None
    experiment: str | None
    description: str | None
    framework: str | None
    created_at: float
    created_by: str | None = None  # the team server's user (revision 0006)
    tags: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "manifest_id": self.manifest_id,
            "size": self.size,
            "file_count": self.file_count,
            "kind": self.kind,
            "file_name": self.file_name,
            "run_id": self.run_id,
            "experiment": self.experiment,
            "description": self.description,
            "framework": self.framework,
            "created_at": self.created_at,
            "tags": dict(self.tags),
            "properties": dict(self.properties),
            "aliases": list(self.aliases),
        }


class ModelRegistry:
    """Reads and writes of registered models over a workspace's ``Store`` and ``SnapshotStore``."""

    def __init__(self, store: Store, snapshots: SnapshotStore) -> None:
        self.store = store
        self.snapshots = snapshots

    # ---- register -------------------------------------------------------------------------------

    def register(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        tags: dict[str, str] | None = None,
        properties: dict[str, str] | None = None,
        description: str | None = None,
        framework: str | None = None,
        run_id: str | None = None,
        experiment: str | None = None,
        file_name: str | None = None,
    ) -> ModelRecord:
        """Store the file or folder at ``path`` and record it as the next version of ``name``."""
        check_model_name(name)
        tags = str_dict(tags, "tags")
        properties = str_dict(properties, "properties")
        if description is not None and not isinstance(description, str):
            raise SpecError("description", f"must be a string, got {type(description).__name__}")
        if framework is not None and not isinstance(framework, str):
            raise SpecError("model_framework", f"must be a string, got {type(framework).__name__}")
        src = os.path.abspath(os.fspath(path))
        if not os.path.exists(src):
            raise SpecError("model_path", f"{os.fspath(path)!r} does not exist")
        kind = "file" if os.path.isfile(src) else "folder"
        snap = self.snapshots.put(src)
        if snap.file_count == 0:
            raise SpecError("model_path", f"the folder {os.fspath(path)!r} holds no files")
        sha = snap.files[0].sha256 if kind == "file" else snap.manifest_id
        now = time.time()
        with self.store.engine.begin() as conn:
            conn.execute(
                self.store._insert(model_names)
                .values(name=name, next_version=1, created_at=now)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            version = conn.execute(
                select(model_names.c.next_version).where(model_names.c.name == name).with_for_update()
            ).scalar_one()
            conn.execute(update(model_names).where(model_names.c.name == name).values(next_version=version + 1))
            conn.execute(
                insert(models).values(
                    name=name,
                    version=version,
                    manifest_id=snap.manifest_id,
                    sha256=sha,
                    size=snap.total_bytes,
                    file_count=snap.file_count,
                    kind=kind,
                    file_name=file_name or os.path.basename(src.rstrip("/")),
                    run_id=run_id,
                    experiment=experiment,
                    description=description,
                    framework=framework,
                    created_at=now,
                )
            )
            if tags:
                conn.execute(
                    insert(model_tags), [{"name": name, "version": version, "key": k, "value": v} for k, v in tags.items()]
                )
            if properties:
                conn.execute(
                    insert(model_properties),
                    [{"name": name, "version": version, "key": k, "value": v} for k, v in properties.items()],
                )
        return self.get(name, version)

    # ---- read -----------------------------------------------------------------------------------

    def _hint(self, name: str) -> str:
        names = self.names()
        if not names:
            return "; no model is registered in this workspace"
        return f"; registered: {', '.join(names[:10])}"

    def names(self) -> list[str]:
        with self.store.read_engine.connect() as conn:
            return [r[0] for r in conn.execute(select(models.c.name).distinct().order_by(models.c.name))]

    def get(self, name: str, version: int | None = None, alias: str | None = None) -> ModelRecord:
        """One version: the latest (``version=None``), a number, or the version ``alias`` points at."""
        check_model_name(name, "name")
        if version is not None and alias is not None:
            raise SpecError("version", "give a version or an alias, not both")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
            raise SpecError("version", f"must be a positive integer, got {version!r}")
        with self.store.read_engine.connect() as conn:
            if alias is not None:
                check_alias(alias)
                version = conn.execute(
                    select(model_aliases.c.version).where(model_aliases.c.name == name, model_aliases.c.alias == alias)
                ).scalar()
                if version is None:
                    known = self._aliases_of(conn, name)
                    raise NotFoundError(
                        f"model {name!r} has no alias {alias!r}"
                        + (f"; its aliases: {', '.join(sorted(known))}" if known else "; it has no aliases"),
                    )
            query = select(models).where(models.c.name == name)
            query = query.where(models.c.version == version) if version is not None else query.order_by(
                models.c.version.desc()
            ).limit(1)
            row = conn.execute(query).mappings().first()
            if row is None:
                if version is not None and conn.execute(select(models.c.name).where(models.c.name == name)).first():
                    versions = [
                        r[0]
                        for r in conn.execute(
                            select(models.c.version).where(models.c.name == name).order_by(models.c.version)
                        )
                    ]
                    raise NotFoundError(
                        f"model {name!r} has no version {version}; its versions: {', '.join(map(str, versions))}"
                    )
                raise NotFoundError(f"no model {name!r} in this workspace{self._hint(name)}")
            return self._record(conn, dict(row))

    def _aliases_of(self, conn: Any, name: str, version: int | None = None) -> dict[str, int]:
        query = select(model_aliases.c.alias, model_aliases.c.version).where(model_aliases.c.name == name)
        if version is not None:
            query = query.where(model_aliases.c.version == version)
        return {r.alias: r.version for r in conn.execute(query)}

    def _record(self, conn: Any, row: dict[str, Any]) -> ModelRecord:
        key = and_(model_tags.c.name == row["name"], model_tags.c.version == row["version"])
        tags = {r.key: r.value for r in conn.execute(select(model_tags).where(key))}
        pkey = and_(model_properties.c.name == row["name"], model_properties.c.version == row["version"])
        props = {r.key: r.value for r in conn.execute(select(model_properties).where(pkey))}
        aliases = sorted(self._aliases_of(conn, row["name"], row["version"]))
        return ModelRecord(**row, tags=tags, properties=props, aliases=aliases)

    def list(
        self, name: str | None = None, tags: Any = None, latest: bool = False
    ) -> list[ModelRecord]:
        """Versions, by name then newest first. ``tags``: a list of keys that must be present or of
        ``[key, value]`` pairs that must match (Azure's shape), or a dict of key → value."""
        wanted: list[tuple[str, str | None]] = []
        if isinstance(tags, dict):
            wanted = [(str(k), None if v is None else str(v)) for k, v in tags.items()]
        elif isinstance(tags, list | tuple):
            for item in tags:
                if isinstance(item, str):
                    wanted.append((item, None))
                elif isinstance(item, list | tuple) and len(item) == 2:
                    wanted.append((str(item[0]), str(item[1])))
                else:
                    raise SpecError("tags", f"expected a key or a [key, value] pair, got {item!r}")
        elif tags is not None:
            raise SpecError("tags", f"must be a list or a dict, got {type(tags).__name__}")
        query = select(models).order_by(models.c.name, models.c.version.desc())
        if name is not None:
            query = query.where(models.c.name == check_model_name(name, "name"))
        out: list[ModelRecord] = []
        seen: set[str] = set()
        with self.store.read_engine.connect() as conn:
            for row in conn.execute(query).mappings():
                if latest and row["name"] in seen:
                    continue
                rec = self._record(conn, dict(row))
                if all(k in rec.tags and (v is None or rec.tags[k] == v) for k, v in wanted):
                    out.append(rec)
                    seen.add(rec.name)
        return out

    def alias_history(self, name: str, alias: str | None = None) -> builtins.list[dict[str, Any]]:
        """Every (re-)point of the name's aliases, oldest first: ``{"alias", "version", "time"}``."""
        query = select(model_alias_events).where(model_alias_events.c.name == name)
        if alias is not None:
            query = query.where(model_alias_events.c.alias == alias)
        with self.store.read_engine.connect() as conn:
            return [
                {"alias": r.alias, "version": r.version, "time": r.ts}
                for r in conn.execute(query.order_by(model_alias_events.c.id))
            ]

    # ---- change ---------------------------------------------------------------------------------

    def set_alias(self, name: str, version: int, alias: str) -> None:
        """Point ``alias`` at ``name:version`` (atomically re-pointed if it pointed elsewhere)."""
        check_alias(alias)
        now = time.time()
        with self.store.engine.begin() as conn:
            if conn.execute(select(model_names.c.name).where(model_names.c.name == name).with_for_update()).first() is None:
                raise NotFoundError(f"no model {name!r} in this workspace")
            if conn.execute(select(models.c.version).where(models.c.name == name, models.c.version == version)).first() is None:
                raise NotFoundError(f"model {name!r} has no version {version}")
            current = conn.execute(
                select(model_aliases.c.version).where(model_aliases.c.name == name, model_aliases.c.alias == alias)
            ).scalar()
            if current == version:
                return
            if current is None:
                conn.execute(insert(model_aliases).values(name=name, alias=alias, version=version, updated_at=now))
            else:
                conn.execute(
                    update(model_aliases)
                    .where(model_aliases.c.name == name, model_aliases.c.alias == alias)
                    .values(version=version, updated_at=now)
                )
            conn.execute(insert(model_alias_events).values(name=name, alias=alias, version=version, ts=now))

    def remove_alias(self, name: str, alias: str) -> None:
        check_alias(alias)
        with self.store.engine.begin() as conn:
            gone = conn.execute(
                delete(model_aliases).where(model_aliases.c.name == name, model_aliases.c.alias == alias)
            ).rowcount
            if not gone:
                raise NotFoundError(f"model {name!r} has no alias {alias!r}")
            conn.execute(insert(model_alias_events).values(name=name, alias=alias, version=None, ts=time.time()))

    def set_tags(self, name: str, version: int, tags: dict[str, str], remove: builtins.list[str] | None = None) -> None:
        with self.store.engine.begin() as conn:
            if conn.execute(select(models.c.version).where(models.c.name == name, models.c.version == version)).first() is None:
                raise NotFoundError(f"model {name!r} has no version {version}")
            if tags:
                stmt = self.store._insert(model_tags)
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["name", "version", "key"], set_={"value": stmt.excluded.value}
                    ),
                    [{"name": name, "version": version, "key": k, "value": v} for k, v in tags.items()],
                )
            for key in remove or []:
                conn.execute(
                    delete(model_tags).where(
                        model_tags.c.name == name, model_tags.c.version == version, model_tags.c.key == key
                    )
                )

    def add_properties(self, name: str, version: int, props: dict[str, str]) -> None:
        """Add-only: a key already set to another value is a WorkspaceError."""
        with self.store.engine.begin() as conn:
            current = {
                r.key: r.value
                for r in conn.execute(
                    select(model_properties).where(model_properties.c.name == name, model_properties.c.version == version)
                )
            }
            for key, value in props.items():
                if key in current:
                    if current[key] != value:
                        raise WorkspaceError(
                            f"property {key!r} of model {name}:{version} is already {current[key]!r}; properties are "
                            "add-only (use tags for values that change)"
                        )
                    continue
                conn.execute(insert(model_properties).values(name=name, version=version, key=key, value=value))

    def delete(self, name: str, version: int) -> None:
        """Remove one version's record, its tags, properties and aliases (its stored content is
        shared and stays; its number is not reused)."""
        with self.store.engine.begin() as conn:
            gone = conn.execute(delete(models).where(models.c.name == name, models.c.version == version)).rowcount
            if not gone:
                raise NotFoundError(f"model {name!r} has no version {version}")
            conn.execute(delete(model_tags).where(model_tags.c.name == name, model_tags.c.version == version))
            conn.execute(
                delete(model_properties).where(model_properties.c.name == name, model_properties.c.version == version)
            )
            for alias in self._aliases_of(conn, name, version):
                conn.execute(delete(model_aliases).where(model_aliases.c.name == name, model_aliases.c.alias == alias))
                conn.execute(insert(model_alias_events).values(name=name, alias=alias, version=None, ts=time.time()))

    # ---- files ----------------------------------------------------------------------------------

    def materialize(self, record: ModelRecord, dest: str, *, link: bool = True) -> str:
        """Write the version's files under ``dest``; returns the model's path there (the file for a
        single-file model, else ``dest``). ``link``: read-only hard links; else writable copies."""
        os.makedirs(dest, exist_ok=True)
        if link:
            self.snapshots.materialize(record.manifest_id, dest)
        else:
            self.snapshots.restore(record.manifest_id, dest)
        if record.kind == "file":
            return os.path.join(dest, self.snapshots.load(record.manifest_id).files[0].path)
        return dest
