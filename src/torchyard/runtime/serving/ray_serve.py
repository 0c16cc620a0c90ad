"""A model service on a Ray cluster (``deployment_target`` names an attached Ray compute target).

The service's supervisor process is then a Ray driver: it starts Ray Serve on the cluster (HTTP on
the head node only, at the service's host and port), runs the scoring app as a Serve application
named after the service (route prefix ``/NAME``) with ``num_replicas`` replicas of
``cpus_per_replica`` CPUs, and mirrors the application's status into ``state.json``. Each replica
runs the same :class:`~torchyard.runtime.serving.app.ScoringApp` as a local worker — the same protocols,
codes, keys and ``/metrics`` — with the generation's code and model files shipped as the replica's
zip in Ray's object store, unpacked by each replica (no shared filesystem needed). Serve restarts a replica whose actor dies; the
others keep serving meanwhile. SIGHUP deploys a newer generation (Serve's rolling update); SIGTERM
deletes the application.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
import traceback
from typing import Any

from torchyard.workspace.services import read_json, write_json

POLL_SECONDS = 0.5


def _log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} torchyard service (ray): {msg}", flush=True)


def _deployment_class() -> Any:
    from ray import serve  # noqa: PLC0415
    from starlette.responses import Response  # noqa: PLC0415

    class TorchyardScoring:
        """One replica: the scoring app over the generation's files in the working_dir."""

        def __init__(self, spec: dict[str, Any], blobs: list[Any]) -> None:
            import io  # noqa: PLC0415
            import zipfile  # noqa: PLC0415

            import ray  # noqa: PLC0415

            from torchyard.runtime.serving.app import ScoringApp  # noqa: PLC0415

            root = tempfile.mkdtemp(prefix="torchyard-ray-replica-")
            with zipfile.ZipFile(io.BytesIO(ray.get(blobs[0]))) as archive:
                archive.extractall(root)
            spec = dict(spec)
            spec["entry_path"] = os.path.join(root, spec["entry_rel"])
            spec["model_dir"] = os.path.join(root, spec["model_rel"])
            os.environ["AZUREML_MODEL_DIR"] = os.environ["TORCHYARD_MODEL_DIR"] = spec["model_dir"]
            keys_path = None
            if spec["config"].get("auth_enabled"):
                fd, keys_path = tempfile.mkstemp(prefix="torchyard-keys-", suffix=".json")
                os.close(fd)
                write_json(keys_path, spec.get("keys") or {}, mode=0o600)
            context = serve.get_replica_context()
            self.prefix = f"/{spec['service_name']}"
            self.app = ScoringApp(spec, f"ray.{context.replica_tag if hasattr(context, 'replica_tag') else os.getpid()}",
                                  keys_path)
            self.app.load()

        async def __call__(self, request: Any) -> Any:
            scope = dict(request.scope)
            path = scope.get("path", "/")
            for prefix in (scope.get("root_path") or "", self.prefix):
                if prefix and path.startswith(prefix):
                    path = path[len(prefix):] or "/"
            scope["path"] = path
            messages: list[dict[str, Any]] = []

            async def send(message: dict[str, Any]) -> None:
                messages.append(message)

            await self.app(scope, request.receive, send)
            start = messages[0]
            body = b"".join(m.get("body", b"") for m in messages[1:])
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]}
            return Response(content=body, status_code=start["status"], headers=headers)

    return serve.deployment(TorchyardScoring)


class RayServeSupervisor:
    def __init__(self, service_dir: str) -> None:
        self.dir = os.path.abspath(service_dir)
        self.doc = read_json(os.path.join(self.dir, "service.json")) or {}
        self.state: dict[str, Any] = {"state": "Transitioning", "pid": os.getpid(), "generation": None,
                                      "restarts": 0, "workers": [], "error": None, "started_at": time.time(),
                                      "deployment_target": self.doc.get("deployment_target")}
        self.hup = False
        self.stop = False

    def save(self, **changes: Any) -> None:
        self.state.update(changes, updated_at=time.time())
        write_json(os.path.join(self.dir, "state.json"), self.state)

    def _app(self, gen: int) -> Any:
        gen_dir = os.path.join(self.dir, f"gen_{gen}")
        spec = read_json(os.path.join(gen_dir, "spec.json")) or {}
        spec["entry_rel"] = os.path.relpath(spec["entry_path"], gen_dir)
        spec["model_rel"] = os.path.relpath(spec["model_dir"], gen_dir)
        if spec["config"].get("auth_enabled"):
            spec["keys"] = read_json(os.path.join(self.dir, "keys.json")) or {}
        cfg = spec["config"]
        threads = str(cfg.get("threads_per_worker", 1))
        env_vars = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TORCHYARD_THREADS_PER_WORKER": threads,
                    "TORCHYARD_SERVICE_NAME": str(self.doc["name"]),
                    **{str(k): str(v) for k, v in spec.get("environment_variables", {}).items()}}
        return _deployment_class().options(
            name="scoring",
            num_replicas=int(cfg.get("num_replicas", 1)),
            max_ongoing_requests=int(cfg.get("max_concurrent_requests", 256)) + 1,  # our 429 answers first
            ray_actor_options={"num_cpus": float(cfg.get("cpus_per_replica", 1.0)),
                               "runtime_env": {"env_vars": env_vars}},
        ).bind(spec, [self._pack(gen_dir)])

    @staticmethod
    def _pack(gen_dir: str) -> Any:
        """The generation's code and model files as a zip in Ray's object store (no shared filesystem)."""
        import io  # noqa: PLC0415
        import zipfile  # noqa: PLC0415

        import ray  # noqa: PLC0415

        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
            for sub in ("src", "models"):
                top = os.path.join(gen_dir, sub)
                for dirpath, _dirs, files in os.walk(top):
                    for f in files:
                        full = os.path.join(dirpath, f)
                        archive.write(full, os.path.relpath(full, gen_dir))
        return ray.put(buf.getvalue())

    def run(self) -> int:
        signal.signal(signal.SIGHUP, lambda *_: setattr(self, "hup", True))
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stop", True))
        name = str(self.doc["name"])
        cfg = self.doc.get("config", {})
        host, port = cfg.get("host", "127.0.0.1"), int(cfg.get("port") or 8000)
        try:
            import logging  # noqa: PLC0415

            import ray  # noqa: PLC0415
            from ray import serve  # noqa: PLC0415

            ray.init(address=self.doc["ray_address"], namespace="torchyard", logging_level=logging.ERROR,
                     log_to_driver=False)
            # ray.init installs its own SIGTERM handler (it exits at once): ours go after it
            signal.signal(signal.SIGHUP, lambda *_: setattr(self, "hup", True))
            signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stop", True))
            serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly")
            self.save(host=host, port=port, base_path=f"/{name}")
            gen = int(self.doc["generation"])
            _log(f"deploying generation {gen} on the Ray cluster {self.doc['ray_address']}")
            serve.run(self._app(gen), name=name, route_prefix=f"/{name}", blocking=False)
            self.save(generation=gen, state="Healthy")
            _log("the application is running")
        except Exception as err:  # noqa: BLE001 - the deployment failed: say why
            _log(f"deployment failed: {err}\n{traceback.format_exc()}")
            try:  # Serve's own account: the replica's traceback
                app = serve.status().applications.get(name)
                for dep_name, dep in (app.deployments.items() if app is not None else []):
                    _log(f"deployment {dep_name}: {dep.status}: {dep.message}")
                    err = RuntimeError(str(dep.message).strip().splitlines()[-1] if dep.message else str(err))
            except Exception:  # noqa: BLE001, S110
                pass
            self.save(state="Failed", error=f"{type(err).__name__}: {err}")
            return 1
        ever = True
        while not self.stop:
            if self.hup:
                self.hup = False
                self.doc = read_json(os.path.join(self.dir, "service.json")) or self.doc
                target = int(self.doc["generation"])
                if target != self.state.get("generation"):
                    self.save(update={"generation": target, "status": "starting", "error": None})
                    try:
                        serve.run(self._app(target), name=name, route_prefix=f"/{name}", blocking=False)
                        self.save(generation=target, update={"generation": target, "status": "done", "error": None})
                    except Exception as err:  # noqa: BLE001
                        _log(f"update to generation {target} failed: {err}")
                        self.save(update={"generation": target, "status": "failed", "error": str(err)})
            try:
                app = serve.status().applications.get(name)
                status = str(getattr(app, "status", "UNKNOWN"))
                replicas = 0
                for dep in (app.deployments.values() if app is not None else []):
                    states: dict[Any, Any] = dict(dep.replica_states)
                    replicas += int(sum(v for k, v in states.items() if str(k).endswith("RUNNING")))
                wanted = int(self.doc.get("config", {}).get("num_replicas", 1))
                state = "Healthy" if status.endswith("RUNNING") and replicas >= wanted else (
                    "Unhealthy" if ever else "Transitioning")
                if state != self.state.get("state") or replicas != self.state.get("replicas"):
                    if self.state.get("state") == "Healthy" and state == "Unhealthy":
                        self.state["restarts"] = int(self.state.get("restarts", 0)) + 1
                        _log(f"a replica is down ({replicas} of {wanted} running); Serve restarts it")
                    self.save(state=state, replicas=replicas, ray_status=status)
            except Exception as err:  # noqa: BLE001 - the cluster is unreachable
                _log(f"cannot read Serve's status: {err}")
                self.save(state="Unhealthy", error=str(err))
            time.sleep(POLL_SECONDS)
        try:
            serve.delete(name)
        except Exception as err:  # noqa: BLE001
            _log(f"could not delete the application: {err}")
        self.save(state="Stopped")
        _log("service stopped")
        return 0
