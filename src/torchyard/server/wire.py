"""The team server's typed wire contract: every JSON request body is a :class:`msgspec.Struct`
declared here, and every declared query parameter is checked against its declared type, in one place.

A route names its body with ``@endpoint(..., body=Model)``; the guard (``server/app.py``) decodes the
request's JSON into ``Model`` with :func:`msgspec.convert` before the handler runs, and the handler
reads it with :func:`parsed`. A value of the wrong JSON type is a 400 naming the field and the type
it must have (``{"kind": []}`` → ``{"error": {"status": 400, "field": "kind", "message": "kind: must
be a string, got an array"}}``), never a 500. The same Structs are the request bodies' schemas in
``/api/v1/openapi.json``. What a type cannot say (lengths, ranges, name rules) the handlers still
check, with their own messages.

Query parameters: one declared with a single value (all but ``array`` ones) given twice, a boolean
other than ``1/0/true/false/yes/no``, an integer or number that does not parse: 400 naming it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, TypeVar

import msgspec

from torchyard.errors import SpecError

T = TypeVar("T")

#: a tag or property value: a JSON scalar (stored as its text)
Scalar = str | int | float | bool | None
ScalarMap = dict[str, Scalar]


class Body(msgspec.Struct, kw_only=True):
    """A request body: unknown fields are ignored (clients may be newer than the server)."""


class StrictBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A request body whose unknown fields are refused (registrations: a typo must not be dropped)."""


# ---- runs ---------------------------------------------------------------------------------------------


class CancelRun(Body):
    reason: str | None = None


class RerunRun(Body):
    """``POST /api/v1/runs/ID/rerun``: ``set`` is the ``KEY=VALUE`` changes (``torchyard rerun --set``)."""

    set: dict[str, str | int | float | bool] | None = None


class MissingObjects(Body):
    objects: list[tuple[str, int]]


class SnapshotEntry(Body):
    path: str
    sha256: str
    size: int
    executable: bool = False


class PutSnapshot(Body):
    files: list[SnapshotEntry]


class SubmitRun(Body):
    experiment: str
    snapshot: str
    spec: dict[str, Any]
    tags: ScalarMap | None = None
    client_source: str | None = None


class SetTags(Body):
    tags: ScalarMap | None = None


class LogValues(Body):
    series: list[tuple[str, list[float], list[int | None], list[float]]]
    rank: int = 0


class RunToken(Body):
    hours: int | float = 168


class StartSweep(Body):
    experiment: str
    snapshot: str
    sweep: dict[str, Any]
    tags: ScalarMap | None = None
    client_source: str | None = None


# ---- access -------------------------------------------------------------------------------------------


class Login(Body):
    user: str
    password: str


class AddUser(Body):
    name: str
    password: str
    role: str | None = None


class SetRole(Body):
    role: str


class CreateToken(Body):
    scope: str | None = None
    days: int | float = 90
    description: str | None = None


class PutGrant(Body):
    level: str


# ---- registrations ------------------------------------------------------------------------------------


class RegisterEnvironment(StrictBody):
    name: str
    version: str | int | None = None
    pip_packages: list[str] | None = None
    conda_packages: list[str] | None = None
    python: str | None = None
    user_managed: bool = False
    pip_requirements: str | None = None
    conda_dependencies: str | None = None


class RegisterDatastore(StrictBody):
    name: str
    kind: str
    path: str | None = None
    bucket: str | None = None
    prefix: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    credentials: str | None = None
    url: str | None = None
    options: dict[str, Any] | None = None


class AttachCompute(Body):
    kind: str
    name: str
    config: dict[str, Any] | None = None


class DatastoreUpload(StrictBody):
    snapshot: str
    target: str | None = None
    overwrite: bool = True


class PruneEnvironments(Body):
    older_than_days: int | float = 7.0


# ---- models, services, endpoints ------------------------------------------------------------------------


class DeploymentConfig(StrictBody):
    """The fields of ``LocalWebservice.deploy_configuration`` a deploy request may set."""

    port: int | None = None
    host: str | None = None
    workers: int | None = None
    auth_enabled: bool | None = None
    max_concurrent_requests: int | None = None
    request_timeout_ms: int | None = None
    max_batch_size: int | None = None
    max_batch_delay_ms: float | None = None
    threads_per_worker: int | None = None
    num_replicas: int | None = None
    cpus_per_replica: float | None = None
    max_request_bytes: int | None = None

    def given(self) -> dict[str, Any]:
        """The fields set (the others keep ``deploy_configuration``'s defaults)."""
        return {k: v for k in self.__struct_fields__ if (v := getattr(self, k)) is not None}


class RegisterModel(Body):
    name: str
    snapshot: str
    kind: str = "folder"
    file_name: str | None = None
    tags: ScalarMap | None = None
    properties: ScalarMap | None = None
    description: str | None = None
    framework: str | None = None


class RegisterRunModel(Body):
    name: str
    model_path: str | None = None
    tags: ScalarMap | None = None
    properties: ScalarMap | None = None
    description: str | None = None
    framework: str | None = None


class ModelTags(Body):
    set: ScalarMap | None = None
    remove: list[str] | None = None


class ModelProperties(Body):
    properties: ScalarMap | None = None


class SetAlias(Body):
    version: int


class DeployService(Body):
    name: str
    models: list[str]
    snapshot: str | None = None  # required; checked after the models (a hidden one: its 404 first)
    entry_script: str | None = None
    environment_variables: ScalarMap | None = None
    deployment_config: DeploymentConfig | None = None
    deployment_target: str | None = None
    overwrite: bool = False


class UpdateService(Body):
    models: list[str] | None = None
    snapshot: str | None = None
    entry_script: str | None = None
    environment_variables: ScalarMap | None = None
    deployment_config: DeploymentConfig | None = None


class RegenKey(Body):
    key: str


class CreateEndpoint(StrictBody):
    name: str
    auth_mode: str | None = None
    port: int | None = None
    host: str | None = None
    description: str | None = None
    max_request_bytes: int | None = None


class DeployToEndpoint(Body):
    deployment: str
    models: list[str]
    snapshot: str | None = None  # required; checked after the endpoint (a hidden one: its 404 first)
    entry_script: str | None = None
    environment_variables: ScalarMap | None = None
    deployment_config: DeploymentConfig | None = None
    deployment_target: str | None = None


class SetTraffic(Body):
    traffic: dict[str, int] | None = None  # required; checked after the endpoint (its 404 first)
    mirror: dict[str, int] | None = None


# ---- decoding -----------------------------------------------------------------------------------------

_TYPE_WORDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean", "null": "null",
               "array": "an array", "object": "an object", "bytes": "a string"}
_CONSTRAINT = re.compile(r"^Expected `(?P<expected>[^`]+)`(?P<rest>.*?)(?:, got `(?P<got>[^`]+)`)?$", re.S)
_FIELD = re.compile(r"^Object (?P<what>missing required|contains unknown) field `(?P<name>[^`]+)`$")


def _words(types: str) -> str:
    parts = [_TYPE_WORDS.get(t.strip(), t.strip()) for t in types.split("|")]
    if "null" in parts and len(parts) > 1:  # "a string or null", the optional part last
        parts = [p for p in parts if p != "null"] + ["null"]
    return " or ".join(parts)


def _field_path(where: str) -> str:
    """``$.files[0].path`` → ``files[0].path``; ``$`` → ``""``."""
    return where.removeprefix("$").removeprefix(".")


def spec_error(err: msgspec.ValidationError, model: type[Any]) -> SpecError:
    """A :class:`SpecError` naming the field of ``err`` and, for a wrong type, the type it must have."""
    text, _sep, where = str(err).partition(" - at `")
    path = _field_path(where.rstrip("`"))
    found = _FIELD.match(text)
    if found:
        field = f"{path}.{found['name']}" if path else found["name"]
        if found["what"] == "missing required":
            return SpecError(field, "is required")
        known = ", ".join(model.__struct_fields__) if not path else ""
        return SpecError(field, "is not a field of this request" + (f"; expected: {known}" if known else ""))
    typed = _CONSTRAINT.match(text)
    field = path or "body"
    if typed:
        expected = _words(typed["expected"])
        if field == "body" and expected == "an object":
            expected = "a JSON object"
        got = f", got {_words(typed['got'])}" if typed["got"] else ""
        return SpecError(field, f"must be {expected}{typed['rest']}{got}")
    return SpecError(field, text[:1].lower() + text[1:])


def decode(raw: bytes, model: type[T]) -> T:
    """``raw`` (a JSON request body; empty: ``{}``) as ``model``, or a 400-bound :class:`SpecError`.

    :func:`json.loads` first (it takes ``NaN`` and ``Infinity``, which Python clients send for a
    diverged loss), then :func:`msgspec.convert` (strict: no string is taken for a number)."""
    try:
        data = json.loads(raw) if raw else {}
    except (ValueError, RecursionError):
        raise SpecError("body", "is not valid JSON") from None
    try:
        return msgspec.convert(data, type=model)
    except msgspec.ValidationError as err:
        raise spec_error(err, model) from None


def parsed(request: Any, model: type[T]) -> T:
    """The request's body as the guard decoded it (the route declared ``body=model``)."""
    body = request.state.body
    if not isinstance(body, model):  # a declaration bug, not the client's: fail loudly in tests
        raise TypeError(f"{request.url.path} declares body {type(body).__name__}, not {model.__name__}")
    return body


def body_schemas(models: list[type[Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """JSON Schemas of ``models`` (references into ``#/components/schemas``) and the components."""
    refs, components = msgspec.json.schema_components(models, ref_template="#/components/schemas/{name}")
    return list(refs), components


# ---- query parameters ---------------------------------------------------------------------------------

BOOLEAN_VALUES = ("", "0", "1", "false", "true", "no", "yes")


def check_query(query: Any, params: tuple[tuple[str, str, str], ...]) -> None:
    """Refuse a declared single-valued parameter given twice, and a value its type cannot be."""
    for name, kind, _doc in params:
        values = query.getlist(name)
        if not values or kind == "array":
            continue
        if len(values) > 1:
            raise SpecError(name, f"is given {len(values)} times; give it once")
        value = values[0]
        if kind == "boolean" and value not in BOOLEAN_VALUES:
            raise SpecError(name, f"must be true or false (1/0, yes/no), got {value!r}")
        if kind == "integer" and value != "":
            try:
                int(value)
            except ValueError:
                raise SpecError(name, f"must be an integer, got {value!r}") from None
        if kind == "number" and value != "":
            try:
                number = float(value)
            except ValueError:
                raise SpecError(name, f"must be a number, got {value!r}") from None
            if not math.isfinite(number):
                raise SpecError(name, f"must be a finite number, got {value!r}")
