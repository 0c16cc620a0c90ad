"""The team server's access control against a real ``torchyard server`` process on a real PostgreSQL:
the role × route matrix (admin, member, viewer, a member without the experiment's grant, an expired
token, no token) for EVERY declared route, the path-traversal corpus against every path-taking route,
login rate limiting, body limits, CSRF on cookie sessions, the Host allow-list and the audit log."""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pgserver
import pytest
from teamserver import PASSWORDS, TeamServer, access_store, make_users, team_server
from uiserver import make_run, make_sweep

from torchyard.status import RunStatus

EXP = "secret-exp"
RUN = "secret_run"
SWEEP = "secret_sweep"
DONE_SWEEP = "secret_done_sweep"
STORE = "files-store"  # a datastore of the server
WHO = ("admin", "member", "viewer", "outsider", "expired", "none")
OBJ = b"print('hello from an uploaded object')\n"
OBJ_SHA = hashlib.sha256(OBJ).hexdigest()


@pytest.fixture(scope="module")
def pg() -> Iterator[str]:
    reason = pgserver.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with pgserver.PgServer() as server:
        yield str(server.url)


@pytest.fixture(scope="module")
def env(pg: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from sqlalchemy import update

    from torchyard.workspace.schema import experiments

    root = tmp_path_factory.mktemp("teamaccess")
    folder = str(root / ".torchyard")
    make_users(folder, pg)
    ws, access = access_store(folder, pg)
    src = root / "src"
    src.mkdir()
    (src / "train.py").write_text("print('training')\n")
    make_run(ws, RUN, experiment=EXP, series={"loss": ([3.0, 2.0, 1.0], [0, 1, 2])},
             logs={0: "rank zero says hi\n"}, artifacts={"outputs/model.txt": b"weights"}, source=src)
    make_sweep(ws, SWEEP, [({"lr": 0.1}, [0.5, 0.7], "completed")], experiment=EXP)
    make_sweep(ws, DONE_SWEEP, [({"lr": 0.2}, [0.4], "completed")], experiment=EXP)
    ws.store.set_status(DONE_SWEEP, RunStatus.COMPLETED)  # ended: resuming it is a no-op (no controller)
    make_run(ws, "secret_live", experiment=EXP, statuses=(RunStatus.RUNNING,))
    make_run(ws, "open_run", experiment="open-exp", statuses=(RunStatus.RUNNING, RunStatus.COMPLETED))
    from torchyard.workspace.models import ModelRegistry

    weights = root / "weights.bin"
    weights.write_bytes(b"weights of the secret model")
    ModelRegistry(ws.store, ws.snapshots).register("hushmodel", weights, run_id=RUN, experiment=EXP)
    with ws.store.engine.begin() as conn:
        conn.execute(update(experiments).where(experiments.c.name == EXP).values(created_by="member"))
    access.grant(EXP, "viewer", "READ", by="test")
    # a server datastore holding outputs/model.txt and a symbolic link out of its folder
    from torchyard.data.datastore import Datastore

    store_dir = root / "datastore" / "outputs"
    store_dir.mkdir(parents=True)
    (store_dir / "model.txt").write_bytes(b"datastore bytes")
    (root / "secret.txt").write_text("top secret content")
    (store_dir / "link.txt").symlink_to(root / "secret.txt")
    Datastore.register_local(ws, STORE, str(root / "datastore"))
    tokens = {
        "admin": access.create_token("admin", scope="admin")[1],
        "member": access.create_token("member", scope="write")[1],
        "viewer": access.create_token("viewer", scope="write")[1],  # the role caps it
        "outsider": access.create_token("outsider", scope="write")[1],
        "expired": access.create_token("member", scope="write", expires_in=0.5)[1],
    }
    time.sleep(0.6)
    with team_server(folder, pg) as server:
        yield {"server": server, "ws": ws, "access": access, "tokens": tokens, "root": root, "folder": folder}
    ws.store.dispose()


def _fresh_token(env: dict[str, Any], who: str) -> tuple[str, str]:
    """A throwaway token of ``who`` (for the routes that revoke the token they are called with)."""
    user = {"expired": "member"}.get(who, who)
    return env["access"].create_token(user, scope="admin" if who == "admin" else "write")


def _request(env: dict[str, Any], who: str, method: str, path: str, body: Any = None,
             raw: bytes | None = None, ctype: str | None = None, token: str | None = None) -> tuple[int, str]:
    server: TeamServer = env["server"]
    headers = {"Origin": server.url}
    tok = token if token is not None else env["tokens"].get(who)
    if tok:
        headers["Authorization"] = f"Bearer {tok}"
    content = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if content is not None:
        headers["Content-Type"] = ctype or "application/json"
    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=False) as client, \
            client.stream(method, path, headers=headers, content=content) as resp:
        if resp.headers.get("content-type", "").startswith("text/event-stream"):
            return resp.status_code, ""  # a live stream: its status is what is checked
        return resp.status_code, resp.read().decode("utf-8", "replace")


OK, HIDDEN, FORBIDDEN, INVALID = "ok", "hidden", "forbidden", "invalid"  # INVALID: let through, then 400
RUN_READ = {"admin": OK, "member": OK, "viewer": OK, "outsider": HIDDEN}
RUN_WRITE = {"admin": OK, "member": OK, "viewer": FORBIDDEN, "outsider": HIDDEN}
EVERYONE = {"admin": OK, "member": OK, "viewer": OK, "outsider": OK}
ADMIN_ONLY = {"admin": OK, "member": FORBIDDEN, "viewer": FORBIDDEN, "outsider": FORBIDDEN}
WRITERS = {"admin": OK, "member": OK, "viewer": FORBIDDEN, "outsider": OK}
MANAGERS_READ = {"admin": OK, "member": OK, "viewer": FORBIDDEN, "outsider": HIDDEN}
NO_SUCH = {"admin": HIDDEN, "member": HIDDEN, "viewer": HIDDEN, "outsider": HIDDEN}
NO_SUCH_WRITE = {"admin": HIDDEN, "member": HIDDEN, "viewer": FORBIDDEN, "outsider": HIDDEN}
# starting a sweep or a service for real is the other tests' work: here a bad body gets past the
# permission checks (400) for those allowed, and 403/404 stops the others before it is looked at
INPUT_WRITE = {"admin": INVALID, "member": INVALID, "viewer": FORBIDDEN, "outsider": HIDDEN}

R = f"/api/v1/runs/{RUN}"
SNAP_FILES = {"files": [{"path": "train.py", "sha256": OBJ_SHA, "size": len(OBJ), "executable": False}]}


def _submit_body() -> dict[str, Any]:
    return {"experiment": EXP, "snapshot": hashlib.sha256(json.dumps({
        "version": 1, "file_count": 1, "total_bytes": len(OBJ),
        "files": [{"path": "train.py", "sha256": OBJ_SHA, "size": len(OBJ), "mode": 0o644}]},
        sort_keys=True, separators=(",", ":")).encode()).hexdigest(),
        "spec": {"source_directory": "/client/src", "entry_script": "train.py", "compute_target": "local"}}


# (method, declared path) → (request path, body or None, expectation per caller). Every declared route
# must be here: a route added without a row fails test_the_matrix_covers_every_route.
MATRIX: dict[tuple[str, str], tuple[str, Any, dict[str, str]]] = {
    ("GET", "/api/v1/openapi.json"): ("/api/v1/openapi.json", None, EVERYONE),
    ("GET", "/api/v1/experiments"): ("/api/v1/experiments", None, EVERYONE),
    ("GET", "/api/v1/runs"): ("/api/v1/runs", None, EVERYONE),
    ("GET", "/api/v1/runs/{run_id}"): (R, None, RUN_READ),
    ("GET", "/api/v1/runs/{run_id}/metrics"): (f"{R}/metrics", None, RUN_READ),
    ("GET", "/api/v1/runs/{run_id}/metrics/{name:path}"): (f"{R}/metrics/loss", None, RUN_READ),
    ("GET", "/api/v1/runs/{run_id}/logs"): (f"{R}/logs", None, RUN_READ),
    ("GET", "/api/v1/runs/{run_id}/logs/{rank:int}"): (f"{R}/logs/0", None, RUN_READ),
    ("GET", "/api/v1/runs/{run_id}/artifacts"): (f"{R}/artifacts", None, RUN_READ),
    ("GET", "/api/v1/runs/{run_id}/artifacts/{path:path}"): (f"{R}/artifacts/outputs/model.txt", None, RUN_READ),
    ("GET", "/api/v1/runs/{run_id}/snapshot"): (f"{R}/snapshot", None, RUN_READ),
    ("GET", "/api/v1/runs/{run_id}/snapshot/{path:path}"): (f"{R}/snapshot/train.py", None, RUN_READ),
    ("GET", "/api/v1/runs/{run_id}/children"): (f"/api/v1/runs/{SWEEP}/children", None, RUN_READ),
    ("GET", "/api/v1/runs/{run_id}/children/metric"): (f"/api/v1/runs/{SWEEP}/children/metric", None, RUN_READ),
    ("POST", "/api/v1/runs/{run_id}/cancel"): (f"{R}/cancel", {}, RUN_WRITE),
    # re-running for real is test_ui_browser's work: a bad change gets past the permission checks (400)
    ("POST", "/api/v1/runs/{run_id}/rerun"): (f"{R}/rerun", {"set": {"node_count": "two"}}, INPUT_WRITE),
    ("GET", "/api/v1/runs/{run_id}/system"): (f"{R}/system", None, RUN_READ),
    ("GET", "/api/v1/runs/{run_id}/events"): (f"{R}/events", None, RUN_READ),
    ("GET", "/api/v1/events"): ("/api/v1/events", None, EVERYONE),
    ("GET", "/"): ("/", None, EVERYONE),
    ("GET", "/runs/{run_id}"): (f"/runs/{RUN}", None, EVERYONE),  # the HTML shell; its data is checked above
    ("GET", "/compare"): ("/compare", None, EVERYONE),
    ("GET", "/sweeps/{run_id}"): (f"/sweeps/{SWEEP}", None, EVERYONE),
    ("POST", "/api/v1/logout"): ("/api/v1/logout", {}, EVERYONE),
    ("GET", "/api/v1/me"): ("/api/v1/me", None, EVERYONE),
    ("GET", "/api/v1/users"): ("/api/v1/users", None, ADMIN_ONLY),
    ("POST", "/api/v1/users"): ("/api/v1/users", "NEWUSER", ADMIN_ONLY),
    ("POST", "/api/v1/users/{name}/role"): ("/api/v1/users/extra/role", {"role": "viewer"}, ADMIN_ONLY),
    ("GET", "/api/v1/audit"): ("/api/v1/audit", None, ADMIN_ONLY),
    ("GET", "/api/v1/tokens"): ("/api/v1/tokens", None, EVERYONE),
    ("POST", "/api/v1/tokens"): ("/api/v1/tokens", {"scope": "read", "days": 1}, EVERYONE),
    ("DELETE", "/api/v1/tokens/{token_id}"): ("/api/v1/tokens/TOKEN_ID", None, EVERYONE),
    ("GET", "/api/v1/experiments/{name}/grants"): (f"/api/v1/experiments/{EXP}/grants", None, MANAGERS_READ),
    ("PUT", "/api/v1/experiments/{name}/grants/{user}"): (f"/api/v1/experiments/{EXP}/grants/extra",
                                                        {"level": "READ"}, RUN_WRITE),
    ("DELETE", "/api/v1/experiments/{name}/grants/{user}"): (f"/api/v1/experiments/{EXP}/grants/extra", None,
                                                           RUN_WRITE),
    ("POST", "/api/v1/objects/missing"): ("/api/v1/objects/missing", {"objects": [[OBJ_SHA, len(OBJ)]]}, WRITERS),
    ("PUT", "/api/v1/objects/{sha256}"): (f"/api/v1/objects/{OBJ_SHA}", OBJ, WRITERS),
    ("PUT", "/api/v1/packs"): ("/api/v1/packs", OBJ_SHA.encode() + len(OBJ).to_bytes(8, "big") + OBJ,
                                 WRITERS),
    ("POST", "/api/v1/snapshots"): ("/api/v1/snapshots", SNAP_FILES, WRITERS),
    ("POST", "/api/v1/runs"): ("/api/v1/runs", "SUBMIT", RUN_WRITE),
    ("GET", "/api/v1/runs/{run_id}/status"): (f"{R}/status", None, RUN_READ),
    ("GET", "/api/v1/runs/{run_id}/details"): (f"{R}/details", None, RUN_READ),
    ("GET", "/api/v1/runs/{run_id}/values"): (f"{R}/values", None, RUN_READ),
    ("GET", "/api/v1/runs/{run_id}/files"): (f"{R}/files", None, RUN_READ),
    ("POST", "/api/v1/runs/{run_id}/tags"): (f"{R}/tags", {"tags": {"k": "v"}}, RUN_WRITE),
    ("POST", "/api/v1/runs/{run_id}/log"): (f"{R}/log", {"series": [["x", [1.0], [0], [time.time()]]]}, RUN_WRITE),
    ("GET", "/api/v1/experiments/{name}/runs"): (f"/api/v1/experiments/{EXP}/runs", None, EVERYONE),
    ("GET", "/api/v1/compute"): ("/api/v1/compute", None, EVERYONE),
    ("GET", "/api/v1/datastores"): ("/api/v1/datastores", None, EVERYONE),
    ("GET", "/api/v1/environments"): ("/api/v1/environments", None, EVERYONE),
    ("POST", "/api/v1/runs/{run_id}/token"): (f"{R}/token", {"hours": 1}, RUN_WRITE),
    ("GET", "/api/v1/runs/{run_id}/mirror/{node:int}"): (f"{R}/mirror/0", None, RUN_READ),
    ("PUT", "/api/v1/runs/{run_id}/mirror/{node:int}"): ("/api/v1/runs/secret_live/mirror/1", b"\x80", RUN_WRITE),
    # models from a run of an experiment: hidden with it (the list leaves them out, by name they 404)
    ("GET", "/api/v1/models"): ("/api/v1/models", None, EVERYONE),
    ("GET", "/api/v1/models/{name}"): ("/api/v1/models/hushmodel", None, RUN_READ),
    ("GET", "/api/v1/models/{name}/versions/{version}"): ("/api/v1/models/hushmodel/versions/1", None, RUN_READ),
    # no service or endpoint exists here: the list is empty for everyone and a name is a 404 for everyone
    ("GET", "/api/v1/services"): ("/api/v1/services", None, EVERYONE),
    ("GET", "/api/v1/services/{name}"): ("/api/v1/services/nosuch", None, NO_SUCH),
    ("GET", "/api/v1/endpoints"): ("/api/v1/endpoints", None, EVERYONE),
    ("GET", "/api/v1/endpoints/{name}"): ("/api/v1/endpoints/nosuch", None, NO_SUCH),
    # sweeps, models and services through the server (remote clients)
    ("POST", "/api/v1/sweeps"): ("/api/v1/sweeps", "SWEEPBODY", INPUT_WRITE),
    ("GET", "/api/v1/runs/{run_id}/sweep"): (f"/api/v1/runs/{SWEEP}/sweep", None, RUN_READ),
    ("POST", "/api/v1/runs/{run_id}/sweep/resume"): (f"/api/v1/runs/{DONE_SWEEP}/sweep/resume", {}, RUN_WRITE),
    ("POST", "/api/v1/models"): ("/api/v1/models", "MODELBODY", WRITERS),  # no run: any writer
    ("POST", "/api/v1/runs/{run_id}/models"): (f"{R}/models", {"name": "runmodel", "model_path": "outputs/model.txt"},
                                               RUN_WRITE),
    ("GET", "/api/v1/models/{name}/versions/{version}/files"): ("/api/v1/models/hushmodel/versions/1/files", None,
                                                              RUN_READ),
    ("GET", "/api/v1/models/{name}/versions/{version}/files/{path:path}"): (
        "/api/v1/models/hushmodel/versions/1/files/weights.bin", None, RUN_READ),
    ("POST", "/api/v1/models/{name}/versions/{version}/tags"): ("/api/v1/models/hushmodel/versions/1/tags",
                                                              {"set": {"k": "v"}}, RUN_WRITE),
    ("POST", "/api/v1/models/{name}/versions/{version}/properties"): (
        "/api/v1/models/hushmodel/versions/1/properties", {"properties": {"k": "v"}}, RUN_WRITE),
    ("PUT", "/api/v1/models/{name}/aliases/{alias}"): ("/api/v1/models/hushmodel/aliases/champion", {"version": 1},
                                                     RUN_WRITE),
    ("DELETE", "/api/v1/models/{name}/aliases/{alias}"): ("/api/v1/models/hushmodel/aliases/champion", None,
                                                        RUN_WRITE),
    ("DELETE", "/api/v1/models/{name}/versions/{version}"): ("/api/v1/models/hushmodel/versions/MODEL_VERSION",
                                                           None, RUN_WRITE),
    ("POST", "/api/v1/services"): ("/api/v1/services", {"name": "matrix-svc", "models": ["hushmodel:1"],
                                                        "snapshot": "0" * 64}, INPUT_WRITE),
    ("POST", "/api/v1/services/{name}/update"): ("/api/v1/services/nosuch/update", {"models": ["hushmodel:1"]},
                                                NO_SUCH_WRITE),
    ("DELETE", "/api/v1/services/{name}"): ("/api/v1/services/nosuch", None, NO_SUCH_WRITE),
    ("GET", "/api/v1/services/{name}/keys"): ("/api/v1/services/nosuch/keys", None, NO_SUCH_WRITE),
    ("POST", "/api/v1/endpoints"): ("/api/v1/endpoints", {"name": "not a name!"},
                                    {"admin": INVALID, "member": INVALID, "viewer": FORBIDDEN, "outsider": INVALID}),
    ("POST", "/api/v1/endpoints/{name}/deployments"): ("/api/v1/endpoints/nosuch/deployments",
                                                     {"deployment": "d", "models": ["hushmodel:1"]}, NO_SUCH_WRITE),
    ("PUT", "/api/v1/endpoints/{name}/traffic"): ("/api/v1/endpoints/nosuch/traffic", {"traffic": {"d": 100}},
                                                NO_SUCH_WRITE),
    ("DELETE", "/api/v1/endpoints/{name}/deployments/{deployment}"): ("/api/v1/endpoints/nosuch/deployments/d", None,
                                                                    NO_SUCH_WRITE),
    ("DELETE", "/api/v1/endpoints/{name}"): ("/api/v1/endpoints/nosuch", None, NO_SUCH_WRITE),
    ("GET", "/api/v1/endpoints/{name}/keys"): ("/api/v1/endpoints/nosuch/keys", None, NO_SUCH_WRITE),
    # registrations: admins only; everyone may list (the list routes above)
    ("POST", "/api/v1/environments"): ("/api/v1/environments", {"name": "matrix-env", "pip_packages": ["six"]},
                                       ADMIN_ONLY),
    ("GET", "/api/v1/environments/{name}"): ("/api/v1/environments/nosuch", None, NO_SUCH),
    ("POST", "/api/v1/datastores"): ("/api/v1/datastores", {"name": "matrix-ds", "kind": "fsspec",
                                                           "url": "memory://matrix"}, ADMIN_ONLY),
    ("POST", "/api/v1/compute"): ("/api/v1/compute", {"kind": "ray", "name": "matrix-ray",
                                                     "config": {"address": "127.0.0.1:6379"}}, ADMIN_ONLY),
    ("DELETE", "/api/v1/compute/{name}"): ("/api/v1/compute/matrix-ray", None, ADMIN_ONLY),
    # keys of services and endpoints (changing them: their creator or an admin; none exists here)
    ("POST", "/api/v1/services/{name}/keys"): ("/api/v1/services/nosuch/keys", {"key": "primary"}, NO_SUCH_WRITE),
    ("POST", "/api/v1/endpoints/{name}/keys"): ("/api/v1/endpoints/nosuch/keys", {"key": "primary"}, NO_SUCH_WRITE),
    # datastore files through the server: members and admins, not viewers
    ("GET", "/api/v1/datastores/{name}/files"): (f"/api/v1/datastores/{STORE}/files", None, WRITERS),
    ("GET", "/api/v1/datastores/{name}/files/{path:path}"): (f"/api/v1/datastores/{STORE}/files/outputs/model.txt",
                                                           None, WRITERS),
    ("POST", "/api/v1/datastores/{name}/upload"): (f"/api/v1/datastores/{STORE}/upload",
                                                  {"snapshot": _submit_body()["snapshot"], "target": "matrix"}, WRITERS),
    # environments: a run's (READ on its experiment), pruning the server's builds (admins)
    ("GET", "/api/v1/runs/{run_id}/environment"): (f"{R}/environment", None, RUN_READ),
    ("POST", "/api/v1/environments/prune"): ("/api/v1/environments/prune", {"older_than_days": 365}, ADMIN_ONLY),
    ("GET", "/models"): ("/models", None, EVERYONE),  # the pages: HTML shells, their data is checked above
    ("GET", "/models/{name}"): ("/models/hushmodel", None, EVERYONE),
    ("GET", "/models/{name}/versions/{version}"): ("/models/hushmodel/versions/1", None, EVERYONE),
    ("GET", "/services"): ("/services", None, EVERYONE),
    ("GET", "/services/{name}"): ("/services/nosuch", None, EVERYONE),
    ("GET", "/endpoints/{name}"): ("/endpoints/nosuch", None, EVERYONE),
}
PUBLIC = {("POST", "/api/v1/login"), ("GET", "/login"), ("GET", "/static/{name}")}


def test_the_matrix_covers_every_route() -> None:
    from torchyard.server.app import ENDPOINTS

    declared = {(ep.method, ep.path) for ep in ENDPOINTS}
    assert declared - PUBLIC == set(MATRIX), "add the new route to MATRIX with its expected access"
    assert {(ep.method, ep.path) for ep in ENDPOINTS if ep.permission == "public"} == PUBLIC


def _call(env: dict[str, Any], who: str, key: tuple[str, str]) -> tuple[int, str]:
    method = key[0]
    path, body, _expect = MATRIX[key]
    token = None
    if key in (("POST", "/api/v1/logout"), ("DELETE", "/api/v1/tokens/{token_id}")) and who in env["tokens"]:
        token_id, token = _fresh_token(env, who)
        path = path.replace("TOKEN_ID", token_id)
        if who == "expired":
            env["access"].revoke_token(token_id)
            token = env["tokens"]["expired"]
    path = path.replace("TOKEN_ID", "0123456789abcdef")
    if body == "NEWUSER":
        body = {"name": f"new-{who}-{time.time_ns()}", "password": "new-user-password", "role": "viewer"}
    elif body == "SUBMIT":
        body = _submit_body()
    elif body == "SWEEPBODY":  # an uploaded snapshot, a definition without sampling: 400 once let through
        body = {**_submit_body(), "sweep": {"trial": _submit_body()["spec"]}}
    elif body == "MODELBODY":
        body = {"name": "matrixmodel", "snapshot": _submit_body()["snapshot"], "kind": "file"}
    if "MODEL_VERSION" in path:  # a fresh version of the secret model to delete, each call
        from torchyard.workspace.models import ModelRegistry

        weights = env["root"] / "weights.bin"
        record = ModelRegistry(env["ws"].store, env["ws"].snapshots).register("hushmodel", weights, run_id=RUN,
                                                                               experiment=EXP)
        path = path.replace("MODEL_VERSION", str(record.version))
    if isinstance(body, bytes):
        return _request(env, who, method, path, raw=body, ctype="application/octet-stream", token=token)
    return _request(env, who, method, path, body=body, token=token)


@pytest.mark.parametrize("who", WHO)
def test_role_by_route_matrix(env: dict[str, Any], who: str) -> None:
    failures = []
    # objects before snapshots before submit: each caller uploads what it then uses
    for key in sorted(MATRIX, key=lambda k: list(MATRIX).index(k)):
        status, text = _call(env, who, key)
        method, route = key
        page = method == "GET" and not route.startswith("/api/")
        if who in ("expired", "none"):
            want = {303} if page else {401}
            if status not in want or RUN in text.replace(MATRIX[key][0], ""):
                failures.append(f"{method} {route}: {status} (want {want}) {text[:120]}")
            continue
        expect = MATRIX[key][2][who]
        ok = (status < 400) if expect == OK else status == {HIDDEN: 404, FORBIDDEN: 403, INVALID: 400}[expect]
        if not ok:
            failures.append(f"{method} {route}: {status} (want {expect}) {text[:200]}")
        named = MATRIX[key][1]  # what the request named (in its path or its body) may be echoed
        asked = (MATRIX[key][0] + (EXP if named in ("SUBMIT", "SWEEPBODY") else "")
                 + (json.dumps(named) if isinstance(named, dict) else ""))
        seen = [n for n in (EXP, RUN, SWEEP, "rank zero says hi", "weights", "hushmodel") if n not in asked and n in text]
        if who == "outsider" and seen:
            failures.append(f"{method} {route}: the outsider saw {seen}: {text[:200]}")
    assert not failures, f"{who}:\n" + "\n".join(failures)


def test_outsider_lists_nothing_of_the_experiment(env: dict[str, Any]) -> None:
    for path in ("/api/v1/runs?top_level=0", "/api/v1/experiments", f"/api/v1/experiments/{EXP}/runs"):
        status, text = _request(env, "outsider", "GET", path)
        assert status == 200 and "secret" not in text, (path, text)
    status, text = _request(env, "outsider", "GET", f"{R}/status")
    missing_status, missing_text = _request(env, "outsider", "GET", "/api/v1/runs/no_such_run/status")
    assert (status, missing_status) == (404, 404)
    assert text.replace(RUN, "X") == missing_text.replace("no_such_run", "X")  # indistinguishable
    status, text = _request(env, "viewer", "GET", "/api/v1/runs?top_level=0")
    assert RUN in text and "open_run" not in text  # a viewer sees exactly its grant
    # hidden (404) whether it exists or not, and never told it does not exist: how to get a grant instead
    status, text = _request(env, "outsider", "GET", f"/api/v1/experiments/{EXP}/grants")
    missing_status, missing_text = _request(env, "outsider", "GET", "/api/v1/experiments/nowhere/grants")
    assert (status, missing_status) == (404, 404)
    assert text.replace(EXP, "X") == missing_text.replace("nowhere", "X")
    assert "outsider has no grant on it" in text and "torchyard server grant" in text


# ---- path traversal ------------------------------------------------------------------------------

CORPUS = [
    "../../../../etc/passwd", "..%2f..%2f..%2fetc%2fpasswd", "%2e%2e/%2e%2e/etc/passwd", "%252e%252e%252fetc%252fpasswd",
    "..%5c..%5cetc%5cpasswd", "outputs/../../../../secret.txt", "/etc/passwd", "%2fetc%2fpasswd", "....//....//etc/passwd",
    "outputs/%00../../secret.txt", "..", ".", "outputs/./model.txt", "..;/secret.txt", "%c0%ae%c0%ae/secret.txt",
    "outputs/link.txt",
]


def _raw(env: dict[str, Any], method: str, path: str) -> tuple[int, bytes]:
    server: TeamServer = env["server"]
    host, port = server.host_port.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=15)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", server.host_port)
        conn.putheader("Authorization", f"Bearer {env['tokens']['admin']}")
        conn.putheader("Origin", server.url)
        if method in ("PUT", "POST"):
            conn.putheader("Content-Type", "application/octet-stream" if "/objects/" in path else "application/json")
            conn.putheader("Content-Length", "2")
        conn.endheaders()
        if method in ("PUT", "POST"):
            conn.send(b"{}")
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_path_traversal_corpus_on_every_path_taking_route(env: dict[str, Any]) -> None:
    import os

    root: Path = env["root"]
    (root / "secret.txt").write_text("top secret content")
    link = Path(env["ws"].artifacts_dir(RUN), "outputs", "link.txt")
    if not link.exists():
        os.symlink(root / "secret.txt", link)
    from torchyard.server.app import ENDPOINTS

    taking = sorted({ep.path for ep in ENDPOINTS if "{" in ep.path})
    assert len(taking) >= 20
    bad = []
    for route in taking:
        for attack in CORPUS:
            # put the attack in each parameter in turn, the others filled with valid values
            for param in [p.strip("{}").split(":")[0] for p in route.split("/") if p.startswith("{")]:
                path = route
                for p in [p for p in route.split("/") if p.startswith("{")]:
                    name = p.strip("{}").split(":")[0]
                    value = attack if name == param else {"run_id": RUN, "user": "extra", "rank": "0",
                                                          "name": STORE if "/datastores/" in route else EXP,
                                                          "sha256": OBJ_SHA, "token_id": "0" * 16,
                                                          "path": "outputs/model.txt", "version": "1",
                                                          "alias": "champion", "deployment": "blue", "node": "0"}[name]
                    path = path.replace(p, value)
                for method in ("GET", "PUT", "DELETE"):
                    status, body = _raw(env, method, path)
                    leaked = b"top secret" in body or b"root:" in body
                    if leaked or status >= 500 or (status < 400 and attack != "outputs/./model.txt"
                                                   and route.startswith("/api/")  # pages: HTML shells
                                                   and param in ("path", "name") and "grants" not in route
                                                   and "runs" not in route.split("{name}")[-1]):
                        bad.append(f"{method} {path}: {status} {body[:80]!r}")
    assert not bad, "\n".join(bad[:30])


# ---- abuse limits -------------------------------------------------------------------------------


def test_login_rate_limit_then_retry_after(env: dict[str, Any]) -> None:
    server: TeamServer = env["server"]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        codes = [client.post("/api/v1/login", json={"user": "extra", "password": "wrong-password"},
                             headers={"Origin": server.url}).status_code for _ in range(6)]
        assert codes[:5] == [401] * 5 and codes[5] == 429
        limited = client.post("/api/v1/login", json={"user": "extra", "password": PASSWORDS["extra"]},
                              headers={"Origin": server.url})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1  # even the right one now
        ok = client.post("/api/v1/login", json={"user": "member", "password": "member-password-nope"},
                         headers={"Origin": server.url})
        assert ok.status_code == 429  # the same client address is limited too


def test_cookie_session_needs_same_origin(env: dict[str, Any], pg: str) -> None:
    # a fresh server: the other test's failures limit this client's address on the shared one
    with team_server(env["folder"], pg) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        resp = client.post("/api/v1/login", json={"user": "member", "password": PASSWORDS["member"]},
                           headers={"Origin": server.url})
        assert resp.status_code == 200, resp.text
        cookie = resp.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert client.get("/api/v1/me").json()["user"] == "member"
        assert client.post("/api/v1/runs/open_run/tags", json={"tags": {"a": "b"}}).status_code == 403  # no Origin
        evil = client.post(f"{R}/tags", json={"tags": {"a": "b"}}, headers={"Origin": "http://evil.example"})
        assert evil.status_code == 403
        good = client.post(f"{R}/tags", json={"tags": {"a": "b"}}, headers={"Origin": server.url})
        assert good.status_code == 200
        assert client.post("/api/v1/logout", headers={"Origin": server.url}).status_code == 200
        assert client.get("/api/v1/me").status_code == 401
        page = client.get("/", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/login"


def test_body_limits_host_allow_list_and_bounded_queries(env: dict[str, Any]) -> None:
    server: TeamServer = env["server"]
    auth = {"Authorization": f"Bearer {env['tokens']['admin']}", "Origin": server.url}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        big = client.post(f"{R}/tags", content=b"{" + b" " * (70 * 1024) + b"}",
                          headers={**auth, "Content-Type": "application/json"})
        assert big.status_code == 413
        assert client.get("/api/v1/me", headers={**auth, "Host": "evil.example"}).status_code == 421
        assert client.get("/api/v1/runs?limit=100000", headers=auth).status_code == 400
        assert client.get("/api/v1/audit?limit=100000", headers=auth).status_code == 400
        wrong = client.put(f"/api/v1/objects/{'0' * 64}", content=b"abc",
                           headers={**auth, "Content-Type": "application/octet-stream"})
        assert wrong.status_code == 400  # content must hash to its name


def test_audit_log_records_permission_changes_and_cancels(env: dict[str, Any]) -> None:
    server: TeamServer = env["server"]
    auth = {"Authorization": f"Bearer {env['tokens']['admin']}", "Origin": server.url}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.put(f"/api/v1/experiments/{EXP}/grants/extra", json={"level": "EDIT"}, headers=auth).status_code == 200
        assert client.post(f"{R}/cancel", json={"reason": "audit me"}, headers=auth).status_code == 200
        entries = client.get("/api/v1/audit", headers=auth).json()["entries"]
    actions = [(e["user_name"], e["action"], e["target"]) for e in entries]
    assert ("admin", "grant.set", EXP) in actions and ("admin", "run.cancel", RUN) in actions
    assert any(a == "user.add" and t == "member" for _u, a, t in actions)  # from the CLI


def test_no_admin_no_server(tmp_path: Path) -> None:
    from teamserver import cli

    proc = cli("server", "--workspace", str(tmp_path / ".torchyard"), "--port", "0", "--host", "0.0.0.0", check=False)
    assert proc.returncode == 2 and "create-admin" in proc.stderr and "Traceback" not in proc.stderr


def test_first_submits_into_a_new_experiment_race_to_one_creator(env: dict[str, Any], pg: str) -> None:
    """Eight callers claiming the same new experiments at once on PostgreSQL: no error (it was a
    unique violation, a 500 to the client), exactly one creator each, the first claim kept."""
    import threading

    ws, access = access_store(env["folder"], pg)
    names = [f"race-{n}" for n in range(20)]
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def claim(user: str) -> None:
        try:
            for name in names:
                barrier.wait(10)
                access.claim_experiment(name, user)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=("member" if n % 2 else "outsider",)) for n in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        creators = _creators(ws, names)
        assert sorted(creators) == sorted(names) and set(creators.values()) <= {"member", "outsider"}
        access.claim_experiment(names[0], "admin")
        assert _creators(ws, names)[names[0]] == creators[names[0]]
    finally:
        ws.store.dispose()


def _creators(ws: Any, names: list[str]) -> dict[str, str]:
    from sqlalchemy import select

    from torchyard.workspace.schema import experiments

    with ws.store.engine.connect() as conn:
        rows = conn.execute(select(experiments.c.name, experiments.c.created_by)
                            .where(experiments.c.name.in_(names))).all()
    return {name: creator for name, creator in rows}
