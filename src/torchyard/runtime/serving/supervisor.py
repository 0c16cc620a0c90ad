"""A model service's supervisor: ``python -m torchyard.runtime.serving.supervisor SERVICE_DIR`` (detached).

It binds the service's address once, resolves the service's environment from the workspace's
environment cache (the one runs use), starts ``workers`` worker processes sharing the listening
socket, and then keeps them going:

* a worker that crashes after it was ready is restarted (the state says ``Unhealthy`` meanwhile,
  ``restarts`` counts them, the service log says why);
* a worker that fails to load on the first deployment ends the service ``Failed`` (its traceback
  is in the logs);
* on SIGHUP it reads ``service.json``: a newer generation's workers are started and loaded first,
  then the old ones drain (stop accepting, finish what they have) — no request is dropped; a new
  generation that fails to load is abandoned and the old one keeps serving;
* on SIGTERM every worker drains and stops, and the state becomes ``Stopped``.

State lives in ``state.json`` (see :mod:`torchyard.workspace.services`).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from typing import Any

from torchyard.workspace.services import read_json, write_json

POLL_SECONDS = 0.05
STOP_GRACE_SECONDS = 15.0
RESTART_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)


def _log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} torchyard service: {msg}", flush=True)


class Worker:
    def __init__(self, gen: int, index: int, proc: subprocess.Popen[bytes], label: str, log: str) -> None:
        self.gen = gen
        self.index = index
        self.proc = proc
        self.label = label
        self.log = log
        self.ready = False
        self.draining = False
        self.started = time.time()


class ServiceSupervisor:
    def __init__(self, service_dir: str) -> None:
        self.dir = os.path.abspath(service_dir)
        self.doc = read_json(os.path.join(self.dir, "service.json")) or {}
        self.status_dir = os.path.join(self.dir, "run")
        self.logs_dir = os.path.join(self.dir, "logs")
        os.makedirs(self.status_dir, exist_ok=True)
        os.makedirs(self.logs_dir, exist_ok=True)
        self.state: dict[str, Any] = {
            "state": "Transitioning",
            "pid": os.getpid(),
            "generation": None,
            "restarts": 0,
            "workers": [],
            "error": None,
            "started_at": time.time(),
        }
        self.workers: list[Worker] = []
        self.hup = False
        self.stop = False
        self.sock: socket.socket | None = None
        self.python = sys.executable
        self.restart_at: dict[int, float] = {}
        self.pending: int | None = None  # a generation being started by an update

    # ---- state ----------------------------------------------------------------------------------

    def save(self, **changes: Any) -> None:
        self.state.update(changes)
        self.state["workers"] = [
            {"label": w.label, "pid": w.proc.pid, "generation": w.gen, "ready": w.ready, "draining": w.draining}
            for w in self.workers
        ]
        self.state["updated_at"] = time.time()
        write_json(os.path.join(self.dir, "state.json"), self.state)

    # ---- workers --------------------------------------------------------------------------------

    def spawn(self, gen: int, index: int, load_first: bool) -> Worker:
        assert self.sock is not None
        label = f"{gen}.{index}.{int(time.time() * 1000) % 100000}"
        for suffix in (".ready", ".failed"):
            try:
                os.unlink(os.path.join(self.status_dir, label + suffix))
            except FileNotFoundError:
                pass
        gen_dir = os.path.join(self.dir, f"gen_{gen}")
        spec = read_json(os.path.join(gen_dir, "spec.json")) or {}
        env = dict(os.environ)
        threads = str(spec.get("config", {}).get("threads_per_worker", 1))
        env.update({
            "TORCHYARD_MODEL_DIR": spec.get("model_dir", ""),
            "AZUREML_MODEL_DIR": spec.get("model_dir", ""),
            "TORCHYARD_SERVICE_NAME": str(self.doc.get("name", "")),
            "TORCHYARD_THREADS_PER_WORKER": threads,
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "PYTHONUNBUFFERED": "1",
        })
        env.update({str(k): str(v) for k, v in spec.get("environment_variables", {}).items()})
        argv = [os.path.join(gen_dir, "spec.json"), str(self.sock.fileno()), label, self.status_dir]
        if load_first:
            argv.append("--load-first")
        if os.path.abspath(self.python) == os.path.abspath(sys.executable):
            cmd = [self.python, "-m", "torchyard.runtime.serving.worker", *argv]
        else:  # another environment: this torchyard, and the serving packages after the env's own
            # the torchyard package folder (this file is torchyard/runtime/serving/supervisor.py)
            pkg = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            extra = [p for p in sys.path if p and os.path.isdir(p)]
            boot = (
                "import sys, runpy, importlib.util as u\n"
                f"spec = u.spec_from_file_location('torchyard', {os.path.join(pkg, '__init__.py')!r}, "
                f"submodule_search_locations=[{pkg!r}])\n"
                "mod = u.module_from_spec(spec); sys.modules['torchyard'] = mod; spec.loader.exec_module(mod)\n"
                f"sys.path.extend({extra!r}); sys.argv[1:] = {argv!r}\n"
                "runpy.run_module('torchyard.runtime.serving.worker', run_name='__main__')\n"
            )
            cmd = [self.python, "-c", boot]
        log_path = os.path.join(self.logs_dir, f"worker_{gen}_{index}.txt")
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                cmd, cwd=spec.get("source_dir") or gen_dir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, pass_fds=(self.sock.fileno(),),
            )
        finally:
            log.close()
        worker = Worker(gen, index, proc, label, log_path)
        self.workers.append(worker)
        _log(f"started worker {gen}.{index} (pid {proc.pid}){' loading first' if load_first else ''}")
        return worker

    def start_generation(self, gen: int, load_first: bool) -> None:
        count = int(self.doc.get("config", {}).get("workers", 1))
        for i in range(count):
            self.spawn(gen, i, load_first)

    def drain(self, worker: Worker) -> None:
        if worker.draining:
            return
        worker.draining = True
        try:
            worker.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass

    def failure_text(self, worker: Worker) -> str:
        try:
            with open(os.path.join(self.status_dir, worker.label + ".failed")) as fh:
                return fh.read()
        except OSError:
            try:
                with open(worker.log, "rb") as fh:
                    fh.seek(0, os.SEEK_END)
                    fh.seek(max(0, fh.tell() - 4000))
                    return fh.read().decode("utf-8", "replace")
            except OSError:
                return ""

    # ---- main loop ------------------------------------------------------------------------------

    def bind(self) -> None:
        cfg = self.doc.get("config", {})
        host, port = cfg.get("host", "127.0.0.1"), int(cfg.get("port") or 0)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.set_inheritable(True)
        self.sock = sock
        self.save(host=host, port=sock.getsockname()[1])
        _log(f"listening on {host}:{sock.getsockname()[1]}")

    def resolve_environment(self) -> None:
        env_doc = self.doc.get("environment")
        if not env_doc:
            return
        import msgspec  # noqa: PLC0415

        from torchyard.environments import resolve  # noqa: PLC0415
        from torchyard.spec.job import EnvironmentSpec  # noqa: PLC0415

        spec = msgspec.convert(env_doc, EnvironmentSpec)
        _log("resolving the environment (logs/environment.txt)")
        resolved = resolve(self.doc["workspace"], spec, os.path.join(self.logs_dir, "environment.txt"))
        self.python = resolved.python
        self.save(environment={"python": resolved.python, "key": resolved.key, "cached": resolved.cached})

    def run(self) -> int:
        signal.signal(signal.SIGHUP, lambda *_: setattr(self, "hup", True))
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stop", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stop", True))
        try:
            self.bind()
            self.resolve_environment()
        except Exception as err:  # noqa: BLE001 - reported as the service's failure
            _log(f"failed to start: {err}\n{traceback.format_exc()}")
            self.save(state="Failed", error=f"{type(err).__name__}: {err}")
            return 1
        gen = int(self.doc["generation"])
        self.start_generation(gen, load_first=False)
        self.save(generation=gen)
        serving = gen
        ever_ready = False
        while True:
            if self.stop:
                self.shutdown()
                return 0
            if self.hup:
                self.hup = False
                self.doc = read_json(os.path.join(self.dir, "service.json")) or self.doc
                target = int(self.doc.get("generation", serving))
                if target != serving and target != self.pending:
                    for w in [w for w in self.workers if w.gen == self.pending]:
                        self.drain(w)
                    self.pending = target
                    _log(f"update: starting generation {target}")
                    self.save(update={"generation": target, "status": "starting", "error": None})
                    self.start_generation(target, load_first=True)
            for w in list(self.workers):
                if not w.ready and os.path.exists(os.path.join(self.status_dir, w.label + ".ready")):
                    w.ready = True
                    _log(f"worker {w.gen}.{w.index} is ready")
                code = w.proc.poll()
                if code is None:
                    continue
                self.workers.remove(w)
                if w.draining:
                    _log(f"worker {w.gen}.{w.index} stopped (exit {code})")
                    continue
                if not w.ready:
                    text = self.failure_text(w)
                    if w.gen == self.pending:
                        _log(f"update to generation {w.gen} failed: worker {w.index} exited {code}\n{text}")
                        for other in [o for o in self.workers if o.gen == w.gen]:
                            self.drain(other)
                        self.pending = None
                        self.save(update={"generation": w.gen, "status": "failed", "error": text[-4000:]})
                        continue
                    if not ever_ready:
                        _log(f"worker {w.gen}.{w.index} failed to load (exit {code}); the deployment failed\n{text}")
                        self.save(state="Failed", error=text[-4000:] or f"worker exited {code} before it was ready")
                        self.shutdown(final_state="Failed")
                        return 1
                restarts = int(self.state.get("restarts", 0)) + 1
                delay = RESTART_BACKOFF[min(restarts - 1, len(RESTART_BACKOFF) - 1)]
                how = f"signal {-code}" if code < 0 else f"exit code {code}"
                _log(f"worker {w.gen}.{w.index} (pid {w.proc.pid}) died ({how}); restarting it in {delay:.1f} s "
                     f"(restart {restarts})")
                self.state["last_crash"] = {"worker": f"{w.gen}.{w.index}", "how": how, "time": time.time()}
                self.save(restarts=restarts)
                self.restart_at[w.index] = time.monotonic() + delay
                self._restart_gen = w.gen
            for index, when in list(self.restart_at.items()):
                if time.monotonic() >= when:
                    del self.restart_at[index]
                    self.spawn(getattr(self, "_restart_gen", serving), index, load_first=True)
            if self.pending is not None:
                new = [w for w in self.workers if w.gen == self.pending]
                count = int(self.doc.get("config", {}).get("workers", 1))
                if len(new) == count and all(w.ready for w in new):
                    old = [w for w in self.workers if w.gen != self.pending]
                    for w in old:
                        self.drain(w)
                    _log(f"update: generation {self.pending} serves; generation {serving} drains")
                    previous = serving
                    serving = self.pending
                    self._restart_gen = serving
                    self.pending = None
                    self.save(generation=serving, update={"generation": serving, "status": "done", "error": None})
                    shutil.rmtree(os.path.join(self.dir, f"gen_{previous}", "models"), ignore_errors=True)
            current = [w for w in self.workers if w.gen == serving and not w.draining]
            count = int(self.doc.get("config", {}).get("workers", 1))
            if current and len(current) == count and all(w.ready for w in current):
                state = "Healthy"
                ever_ready = True
            elif ever_ready:
                state = "Unhealthy"
            else:
                state = "Transitioning"
            if state != self.state.get("state") or any(
                w.ready != s.get("ready") for w, s in zip(self.workers, self.state.get("workers", []), strict=False)
            ) or len(self.workers) != len(self.state.get("workers", [])):
                self.save(state=state)
            time.sleep(POLL_SECONDS)

    def shutdown(self, final_state: str = "Stopped") -> None:
        _log("stopping every worker")
        for w in self.workers:
            self.drain(w)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for w in self.workers:
            try:
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
        self.workers = []
        if self.sock is not None:
            self.sock.close()
        self.save(state=final_state)
        _log(f"service {final_state.lower()}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m torchyard.runtime.serving.supervisor SERVICE_DIR", file=sys.stderr)
        return 2
    try:  # a service outlives its deployer; it is nobody's child (see spawn_detached)
        ctypes.CDLL("libc.so.6").prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphans of workers come to us
    except OSError:
        pass
    doc = read_json(os.path.join(args[0], "service.json")) or {}
    if doc.get("deployment_target"):
        from torchyard.runtime.serving.ray_serve import RayServeSupervisor  # noqa: PLC0415

        return RayServeSupervisor(args[0]).run()
    return ServiceSupervisor(args[0]).run()


if __name__ == "__main__":
    sys.exit(main())
