"""What runs on each Ray node of a job: the :class:`NodeAgent` actor (one per placement-group bundle).

It unpacks the run's code snapshot into a node-local folder (no shared filesystem needed), builds the
environment in a node-local, content-keyed cache, starts torchyard's per-node launcher as a
subprocess, serves the new bytes of the node's logs and metric journals to the supervisor, hands
back ``outputs/`` at the end and removes everything it made. Under the mpi backend it also serves as
the remote shell ``mpirun`` uses to start its daemons on this node (see :mod:`ray_rsh`).

The class is plain Python; :mod:`ray_backend` wraps it with ``ray.remote``. Nodes need torchyard
installed (``pip install torchyard[ray]``), as they need ray.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
from typing import Any

from torchyard.compute.mirror import scan
from torchyard.paths import RunPaths

#: files served incrementally (append-only) and whole (rewritten in place)
WHOLE_PREFIX = RunPaths.reports_prefix()
RSH_REQUEST_SECONDS = 10.0
RSH_MAX_REQUEST = 1 << 20


def node_root() -> str:
    """Where a node keeps runs and built environments (``TORCHYARD_RAY_NODE_DIR`` to change it)."""
    return os.environ.get("TORCHYARD_RAY_NODE_DIR") or os.path.join(tempfile.gettempdir(), "torchyard-ray")


def pack(folder: str, include: list[str] | None = None, exclude_top: tuple[str, ...] = ()) -> bytes:
    """A gzip-less tar of ``folder`` (only the ``include`` entries if given); hard links kept."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        names = include if include is not None else sorted(os.listdir(folder))
        for name in names:
            if name in exclude_top or not os.path.lexists(os.path.join(folder, name)):
                continue
            tar.add(os.path.join(folder, name), arcname=name)
    return buf.getvalue()


def unpack(data: bytes, dest: str) -> None:
    os.makedirs(dest, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(dest, filter="data")


def _preexec() -> None:
    # the launcher dies (SIGTERM: it stops its ranks) when this actor's worker process dies
    import ctypes  # noqa: PLC0415

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)


class NodeAgent:
    """One node of one run. Methods are called by the run's supervisor through Ray."""

    def __init__(self, run_id: str, node_rank: int) -> None:
        self.run_id = run_id
        self.node_rank = node_rank
        self.dir = node_folder(run_id, node_rank)
        self.proc: subprocess.Popen[bytes] | None = None
        self.rsh_token = ""
        self._rsh: socket.socket | None = None
        self._rsh_procs: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()
        self._started = threading.Event()  # calls to a threaded actor may run out of order
        self._stopped = False  # stop() came (perhaps before start(): then start() starts nothing)
        self._closed = False  # cleanup() came: a setup() still running removes what it made
        self._start_failed = False
        self.forwarded: dict[str, str] = {}

    # ---- setting up ----------------------------------------------------------------------------

    def setup(self, snapshot: bytes, bootstrap: dict[str, Any] | None, want_port: bool,
              forwarded: dict[str, str] | None = None) -> dict[str, Any]:
        """Unpack the code and run the node bootstrap (the job's environment and inputs, placed on this
        node in its own cache); returns this node's address, python and a free port. ``forwarded``:
        credential variables for this run's processes, kept in this actor's memory only."""
        import ray  # noqa: PLC0415

        self.forwarded = dict(forwarded or {})

        with self._lock:
            if self._closed:
                raise RuntimeError("the run ended before this node was set up")
            shutil.rmtree(self.dir, ignore_errors=True)
            unpack(snapshot, self.dir)
            paths = RunPaths(self.dir)
            for folder in (paths.logs, paths.outputs, paths.journal):
                os.makedirs(folder, exist_ok=True)
        python = sys.executable
        if bootstrap and (bootstrap.get("environment") or bootstrap.get("inputs") or bootstrap.get("outputs")):
            python = self._bootstrap(bootstrap)
        ip = ray.util.get_node_ip_address()
        port = 0
        if want_port:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("", 0))
                port = int(sock.getsockname()[1])
        with self._lock:
            if self._closed:  # cleanup() ran while the environment was being built: undo what it rebuilt
                remove_node_folder(self.dir)
                raise RuntimeError("the run ended while this node was being set up")
        return {
            "ip": ip,
            "hostname": socket.gethostname(),
            "python": python,
            "launcher_python": sys.executable,
            "port": port,
            "workdir": self.dir,
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
        }

    def _bootstrap(self, request: dict[str, Any]) -> str:
        """torchyard.runtime.bootstrap on this node (every node, also those whose ranks mpirun starts);
        its result is where the node's launcher finds it. Returns the environment's interpreter."""
        paths = RunPaths(self.dir)
        request = {**request, "cache_root": request.get("cache_root") or node_root()}
        request_path = paths.target_file(f"bootstrap_node_{self.node_rank}.json")
        result_path = paths.target_file(f"placement_node_{self.node_rank}.json")
        with os.fdopen(os.open(request_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            json.dump(request, fh)  # presigned URLs, if any: the run's owner only
        log_path = paths.log(f"bootstrap_node_{self.node_rank}.txt")
        with open(log_path, "ab") as log:
            rc = subprocess.call([sys.executable, "-m", "torchyard.runtime.bootstrap", request_path, result_path,
                                  str(self.node_rank)], cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, env=self._env())
        if rc != 0:
            with open(log_path, "rb") as fh:
                last = fh.read().decode("utf-8", "replace").strip().splitlines()[-1:] or ["(no output)"]
            raise RuntimeError(f"node {self.node_rank} could not be prepared: {last[0]}")
        with open(result_path) as fh:
            return str(json.load(fh)["python"])

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.forwarded}

    def start(self, plan: dict[str, Any]) -> int:
        """Start the launcher for ``plan``; returns its pid (0: the run was stopped first, nothing started)."""
        try:
            with self._lock:  # stop() may have come first (a threaded actor's calls run in any order)
                if self._stopped or self._closed:
                    return 0
                plan_path = RunPaths(self.dir).plan(self.node_rank)
                # the plan holds the rsh token (TORCHYARD_RAY_RSH): readable by this user only
                fd = os.open(plan_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    json.dump(plan, fh)
                log_path = RunPaths(self.dir).launcher_log(self.node_rank)
                with open(log_path, "ab") as log:
                    self.proc = subprocess.Popen(
                        [sys.executable, "-m", "torchyard.launch.launcher", plan_path],
                        cwd=self.dir,
                        env=self._env(),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        preexec_fn=_preexec,  # noqa: PLW1509  (prctl only)
                    )
                return self.proc.pid
        except BaseException:
            self._start_failed = True
            raise
        finally:
            self._started.set()  # wait() never blocks on a start() that started nothing

    def wait(self) -> int:
        """Block until the launcher exits; its exit code (128+N for a signal)."""
        self._started.wait()
        if self.proc is None:  # stopped before it started (130), or start() failed (1: start's error says why)
            return 1 if self._start_failed else 130
        rc = self.proc.wait()
        return 128 - rc if rc < 0 else rc

    # ---- streaming back ------------------------------------------------------------------------

    def pull(self, offsets: dict[str, int]) -> dict[str, Any]:
        """A mirror frame (compute/mirror.py): what of this node's folder the supervisor lacks."""
        return scan(self.dir, offsets)

    def outputs(self, what: list[str]) -> bytes:
        return pack(self.dir, include=what)

    # ---- stopping ------------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM to the launcher: it stops its ranks (a grace period, then SIGKILL). Idempotent."""
        with self._lock:
            self._stopped = True
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self._rsh_procs:
            if proc.poll() is None:
                _killpg(proc.pid, signal.SIGTERM)

    def cleanup(self) -> None:
        """Kill whatever is left of the run on this node and remove its folder."""
        with self._lock:  # waits for a setup() unpacking or a start() starting; later ones do nothing
            self._closed = self._stopped = True
        for proc in [p for p in (self.proc, *self._rsh_procs) if p is not None]:
            _killpg(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self._rsh is not None:
            self._rsh.close()
        remove_node_folder(self.dir)
        shutil.rmtree(mpi_session_base(self.run_id), ignore_errors=True)

    # ---- remote shell for mpirun ---------------------------------------------------------------

    def rsh_server(self) -> list[Any]:
        """Listen for commands from ``mpirun`` (through :mod:`ray_rsh`) to run on this node;
        returns ``[address, port, token]``."""
        import ray  # noqa: PLC0415

        ip = ray.util.get_node_ip_address()
        self.rsh_token = secrets.token_hex(16)
        self._rsh = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._rsh.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._rsh.bind((ip, 0))  # the address Ray's nodes reach each other on, not every interface
        self._rsh.listen(8)
        threading.Thread(target=self._serve_rsh, daemon=True).start()
        return [ip, int(self._rsh.getsockname()[1]), self.rsh_token]

    def _serve_rsh(self) -> None:
        assert self._rsh is not None
        while True:
            try:
                conn, _ = self._rsh.accept()
            except OSError:
                return
            threading.Thread(target=self._rsh_session, args=(conn,), daemon=True).start()

    def _rsh_session(self, conn: socket.socket) -> None:
        from torchyard.compute.ray_rsh import recv_request, send_frame  # noqa: PLC0415

        with conn:
            conn.settimeout(RSH_REQUEST_SECONDS)  # a peer that connects and says nothing holds no thread
            try:
                request = recv_request(conn, limit=RSH_MAX_REQUEST)
            except OSError:
                return
            if (
                request is None
                or not self.rsh_token
                or not secrets.compare_digest(str(request.get("token", "")).encode(), self.rsh_token.encode())
                or not isinstance(request.get("command"), str)
            ):
                return
            conn.settimeout(None)
            env = self._env()
            env.update({str(k): str(v) for k, v in dict(request.get("env") or {}).items()})
            env["TORCHYARD_NODE_DIR"] = self.dir
            with self._lock:
                if self._stopped:
                    return
            proc = subprocess.Popen(
                ["/bin/sh", "-c", request["command"]],
                cwd=self.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_preexec,  # noqa: PLW1509
            )
            with self._lock:
                self._rsh_procs.append(proc)
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            try:
                for chunk in iter(lambda: os.read(fd, 65536), b""):
                    send_frame(conn, b"o" + chunk)
                rc = proc.wait()
                send_frame(conn, b"x" + str(128 - rc if rc < 0 else rc).encode())
            except OSError:  # mpirun went away: so does its daemon
                _killpg(proc.pid, signal.SIGTERM)
            finally:
                proc.stdout.close()


class NodePool:
    """A warm node agent that outlives runs (``RayCompute(keep_agents=True)``): one detached actor
    per Ray node, holding a :class:`NodeAgent` per (run, node) it serves, so a run's start costs no
    new actor (Ray's floor, about a second). It reserves nothing: each run's placement group does."""

    def __init__(self) -> None:
        self.agents: dict[tuple[str, int], NodeAgent] = {}
        self._lock = threading.Lock()

    def _agent(self, run_id: str, node_rank: int, create: bool = False) -> NodeAgent:
        with self._lock:
            agent = self.agents.get((run_id, node_rank))
            if agent is None:
                if not create:
                    raise RuntimeError(f"this node holds no node {node_rank} of run {run_id}")
                agent = self.agents[(run_id, node_rank)] = NodeAgent(run_id, node_rank)
            return agent

    def ping(self) -> int:
        return os.getpid()

    def setup(self, run_id: str, node_rank: int, *args: Any) -> dict[str, Any]:
        return self._agent(run_id, node_rank, create=True).setup(*args)

    def start(self, run_id: str, node_rank: int, plan: dict[str, Any]) -> int:
        return self._agent(run_id, node_rank).start(plan)

    def wait(self, run_id: str, node_rank: int) -> int:
        return self._agent(run_id, node_rank).wait()

    def pull(self, run_id: str, node_rank: int, offsets: dict[str, int]) -> dict[str, Any]:
        return self._agent(run_id, node_rank).pull(offsets)

    def outputs(self, run_id: str, node_rank: int, what: list[str]) -> bytes:
        return self._agent(run_id, node_rank).outputs(what)

    def stop(self, run_id: str, node_rank: int) -> None:
        with self._lock:
            agent = self.agents.get((run_id, node_rank))
        if agent is not None:
            agent.stop()

    def rsh_server(self, run_id: str, node_rank: int) -> list[Any]:
        return self._agent(run_id, node_rank).rsh_server()

    def cleanup(self, run_id: str, node_rank: int) -> None:
        with self._lock:
            agent = self.agents.pop((run_id, node_rank), None)
        if agent is not None:
            agent.cleanup()
        else:
            remove_run_folder(run_id, node_rank)

    def runs(self) -> list[str]:
        with self._lock:
            return sorted({run_id for run_id, _ in self.agents})


def node_folder(run_id: str, node_rank: int) -> str:
    return os.path.join(node_root(), "runs", run_id, f"node_{node_rank}")


def remove_run_folder(run_id: str, node_rank: int) -> None:
    """Run as a Ray task on a node whose actor did not clean up: remove what the run left there."""
    remove_node_folder(node_folder(run_id, node_rank))
    shutil.rmtree(mpi_session_base(run_id), ignore_errors=True)


def mpi_session_base(run_id: str) -> str:
    """Open MPI's session folders for one run (``orte_tmpdir_base``), the same path on every node.
    Left to its default (``/tmp/ompi.HOST.UID``) it is shared by every Open MPI on the machine, and
    one job's clean-up removing that folder races another job (or another node of the same job on
    that machine) creating its own inside it."""
    return os.path.join("/tmp", f"torchyard-mpi-{run_id}")


def remove_node_folder(folder: str) -> None:
    """A node folder and, once empty, its run's folder."""
    shutil.rmtree(folder, ignore_errors=True)
    try:
        os.rmdir(os.path.dirname(folder))
    except OSError:
        pass


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
