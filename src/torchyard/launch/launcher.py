"""The per-node launcher: ``python -m torchyard.launch.launcher PLAN.json``.

One runs on every node of every compute target. It starts the node's ranks with the env contract,
writes each rank's stdout/stderr live to ``logs/rank_N.txt``, forwards SIGTERM/SIGINT, and on the first
rank that exits non-zero (or dies by a signal) stops every other rank: SIGTERM to each rank's process
group, a grace period, then SIGKILL. It writes what happened to the plan's ``status_path`` and exits
with the first failure's code. Modes: ``direct`` (spawn the ranks itself), ``mpi`` (node 0 runs
``mpirun`` for every node), ``torchrun`` (delegate to ``torch.distributed.run`` for elastic restarts).

The plan is a typed :class:`~torchyard.launch.plan.NodePlan`; what only the node knows when it starts
(its rank, node 0's address, the hosts) it reads from the variables the plan's ``fill`` names.

Stdlib and msgspec only, no torch: the launcher must cost nothing next to the script's own imports.
"""

from __future__ import annotations

import ctypes
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from torchyard.launch.contract import interface_to, node_env, node_gpus, rank_env, with_rankboot
from torchyard.launch.plan import NodePlan
from torchyard.paths import RunPaths

POLL = 0.05
#: how long a launcher waits for its ranks' stack dumps (faulthandler writes them at once)
STACKS_WAIT = 3.0

_LIBC: Any = None


WAITED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}


def _die_with_parent(sig: int) -> None:
    """In a new child: deliver ``sig`` to it when its parent dies, and unblock the signals the
    parent waits on (a blocked mask is inherited across fork and exec)."""
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    _LIBC.prctl(1, sig)  # PR_SET_PDEATHSIG
    signal.pthread_sigmask(signal.SIG_UNBLOCK, WAITED)


def resolve_plan(plan: NodePlan | dict[str, Any], environ: Any = None) -> NodePlan:
    """``plan`` as a NodePlan with its node-only facts filled from ``environ`` (this process's)."""
    typed = plan if isinstance(plan, NodePlan) else NodePlan.from_dict(plan)
    return typed.on_node(environ)


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Launcher:
    def __init__(self, plan: NodePlan | dict[str, Any]) -> None:
        plan = self.plan = resolve_plan(plan)
        self.workdir: str = plan.workdir
        self.paths = RunPaths(self.workdir)
        self.log_dir = self.paths.logs
        self.exit_dir = self.paths.exit
        self.grace: float = plan.grace_seconds
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.stop_signal: int | None = None
        self.orphaned = False
        self.parent = os.getppid()
        # the run's token (nodes that report to the team server): for the pusher only, not the ranks
        self.run_token = os.environ.pop("TORCHYARD_RUN_TOKEN", None)
        os.makedirs(self.log_dir, exist_ok=True)
        os.makedirs(self.exit_dir, exist_ok=True)
        os.makedirs(self.paths.outputs, exist_ok=True)
        os.makedirs(self.paths.checkpoints, exist_ok=True)
        self.stacks_dumped = False
        self.node = self._node_env()
        self.gpus = node_gpus(os.environ) if plan.use_gpu else None

    def _node_env(self) -> dict[str, str]:
        plan = self.plan
        return node_env(
            run_id=plan.run_id,
            experiment=plan.experiment,
            workspace=plan.workspace,
            workdir=self.workdir,
            master_addr=plan.master_addr,
            master_port=plan.master_port,
            node_rank=plan.node_rank,
            node_count=plan.node_count,
            process_count_per_node=plan.nproc,
            dist_backend=plan.dist_backend,
            user_env=plan.user_env,
            socket_ifname=interface_to(plan.master_addr) if plan.node_count * plan.nproc > 1 else None,
            python=plan.argv[0] if plan.argv else None,
        )

    # ---- starting ranks ---------------------------------------------------------------------------

    def _spawn(self, argv: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
        log = open(os.path.join(self.log_dir, log_name), "ab", buffering=0)  # noqa: SIM115
        try:
            return subprocess.Popen(
                argv,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: _die_with_parent(signal.SIGKILL),
            )
        finally:
            log.close()

    def _rank_argv(self) -> list[str]:
        return list(self.plan.argv)

    def _bootstrap(self) -> dict[str, Any] | None:
        """Place the environment and inputs on this node (torchyard.runtime.bootstrap, as a program:
        the launcher itself stays stdlib + msgspec). None when it failed (its log says why)."""
        plan = self.plan
        result_path = self.paths.target_file(f"placement_node_{plan.node_rank}.json")
        if not os.path.exists(result_path):  # a node agent may have run it already
            if not plan.bootstrap or not (plan.bootstrap.get("environment") or plan.bootstrap.get("inputs")
                                          or plan.bootstrap.get("outputs")):
                return {"python": sys.executable, "bin": os.path.dirname(sys.executable), "paths": {}}
            request = self.paths.target_file(f"bootstrap_node_{plan.node_rank}.json")
            with os.fdopen(os.open(request, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
                json.dump(plan.bootstrap, fh)  # presigned URLs, if any: the run's owner only
            with open(self.paths.log(f"bootstrap_node_{plan.node_rank}.txt"), "ab") as log:
                rc = subprocess.call([sys.executable, "-m", "torchyard.runtime.bootstrap", request, result_path,
                                      str(plan.node_rank)],
                                     cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            if rc != 0:
                return None
        with open(result_path) as fh:
            result: dict[str, Any] = json.load(fh)
        return result

    def _mark_checkpoint_dir(self) -> None:
        """Leave ``.node_K`` in the checkpoint folder: a rank counts them to know how many nodes share
        the folder (all on a shared file system, one where it is node-local), hence how many ranks
        must finish a checkpoint before it is committed (torchyard.tracking.checkpoint)."""
        nodes = range(self.plan.node_count) if self.plan.mode == "mpi" else (self.plan.node_rank,)
        for k in nodes:  # under mpi one launcher starts every node's ranks, into one folder
            try:
                with open(os.path.join(self.paths.checkpoints, f".node_{k}"), "w") as fh:
                    fh.write(socket.gethostname())
            except OSError:
                pass

    def start(self) -> None:
        mode = self.plan.mode
        base = dict(os.environ)
        base.update(self.node)
        base["PYTHONPATH"] = with_rankboot(base)  # faulthandler on a real-time signal in every Python rank
        base.pop("TORCHYARD_STACKS_OWNER", None)
        os.makedirs(self.paths.stacks, exist_ok=True)
        self._mark_checkpoint_dir()
        if mode == "direct":
            nproc = self.plan.nproc
            for local in range(nproc):
                env = dict(base)
                env.update(rank_env(self.node, local, self.gpus))
                rank = int(env["RANK"])
                self.procs[rank] = self._spawn(self._rank_argv(), env, f"rank_{rank}.txt")
        elif mode == "mpi":
            self.procs[-1] = self._spawn(self._mpirun_argv(base), base, f"mpirun_node_{self.plan.node_rank}.txt")
        elif mode == "torchrun":
            self.procs[-1] = self._spawn(self._torchrun_argv(), base, f"torchrun_node_{self.plan.node_rank}.txt")
        else:
            raise SystemExit(f"torchyard launcher: unknown mode {mode!r}")

    def _mpirun_argv(self, env: dict[str, str]) -> list[str]:
        plan = self.plan
        # a rank started on another machine (Ray's remote shell sets TORCHYARD_NODE_DIR) writes there
        rel = RunPaths.relative()
        shim = (
            f'D=${{TORCHYARD_NODE_DIR:-{shlex.quote(self.workdir)}}}; cd "$D" || exit 1; '
            f'export TORCHYARD_OUTPUT_DIR=$D/{rel.outputs} TORCHYARD_LOG_DIR=$D/{rel.logs} '
            f'TORCHYARD_JOURNAL_DIR=$D/{rel.journal} TORCHYARD_UPLOAD_DIR=$D/{rel.uploads} '
            f'TORCHYARD_CHECKPOINT_DIR=$D/{rel.checkpoints} TORCHYARD_STACKS_DIR=$D/{rel.stacks}; '
            f'mkdir -p "$D/{rel.logs}" "$D/{rel.outputs}" "$D/{rel.journal}" "$D/{rel.exit}" "$D/{rel.checkpoints}"; '
            'R=$OMPI_COMM_WORLD_RANK; P=$LOCAL_WORLD_SIZE; '
            'export RANK=$R LOCAL_RANK=$((R % P)) NODE_RANK=$((R / P)) GROUP_RANK=$((R / P)) PET_NODE_RANK=$((R / P)) '
            'AZ_BATCHAI_TASK_INDEX=$R '
            f'TORCHYARD_TENSORBOARD_DIR=$D/{rel.logs}/tensorboard/rank_$R; '
        )
        if self.gpus:
            shim += f'set -- {" ".join(shlex.quote(g) for g in self.gpus)} -- "$@"; G=""; N=0; '
            shim += 'while [ "$1" != "--" ]; do G="$G $1"; N=$((N+1)); shift; done; shift; '
            shim += 'I=0; for g in $G; do [ $I -eq $((LOCAL_RANK % N)) ] && export CUDA_VISIBLE_DEVICES=$g TORCHYARD_GPUS=$g; I=$((I+1)); done; '
        shim += (
            f'"$@" >> "$D/{rel.logs}/rank_$R.txt" 2>&1; rc=$?; '
            f'echo "$rc $(date +%s.%N)" > "$D/{rel.exit}/rank_$R"; exit $rc'
        )
        if plan.mpi_launcher == "srun":  # Slurm starts every rank (PMIx wire-up); srun exports the environment
            shim = 'R=${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-$SLURM_PROCID}}; ' + shim.replace(
                "R=$OMPI_COMM_WORLD_RANK; ", "")
            return [
                "srun", "--mpi=pmix", f"--nodes={plan.node_count}", f"--ntasks={plan.node_count * plan.nproc}",
                f"--ntasks-per-node={plan.nproc}", "--cpus-per-task=1", "--kill-on-bad-exit=1", *plan.mpi_args,
                "sh", "-c", shim, "torchyard-rank", *self._rank_argv(),
            ]  # fmt: skip
        hostfile = self.paths.hostfile
        with open(hostfile, "w") as fh:
            for host, slots in plan.hosts:
                fh.write(f"{host} slots={slots}\n")
        exports = sorted(set(self.node) | {"PATH", "PYTHONPATH", "VIRTUAL_ENV"} & set(env))
        argv = [
            plan.mpirun,
            "--allow-run-as-root",
            "--oversubscribe",
            "--bind-to",
            "none",
            "--hostfile",
            hostfile,
            "-np",
            str(plan.node_count * plan.nproc),
            *plan.mpi_args,
        ]
        for name in exports:
            argv += ["-x", name]
        return argv + ["sh", "-c", shim, "torchyard-rank", *self._rank_argv()]

    def _torchrun_argv(self) -> list[str]:
        plan = self.plan
        argv = self._rank_argv()
        python, script_args = argv[0], argv[1:]
        return [
            python,
            "-m",
            "torch.distributed.run",
            f"--nnodes={plan.node_count}",
            f"--node-rank={plan.node_rank}",
            f"--nproc-per-node={plan.nproc}",
            f"--master-addr={plan.master_addr}",
            f"--master-port={plan.master_port}",
            f"--max-restarts={plan.max_restarts}",
            *script_args,
        ]

    # ---- watching ---------------------------------------------------------------------------------

    def _wait(self, timeout: float) -> None:
        """Sleep until a rank exits or a stop signal arrives (or ``timeout``)."""
        got = signal.sigtimedwait(WAITED, timeout)
        if got is not None and got.si_signo in (signal.SIGTERM, signal.SIGINT):
            self.stop_signal = got.si_signo

    def _beat(self, stop: threading.Event) -> None:
        """Rewrite the heartbeat file every ``heartbeat_seconds`` until ``stop`` (a thread: the node
        bootstrap may take minutes). A target that cannot see its nodes die watches it."""
        path = self.paths.heartbeat(self.plan.node_rank)
        orphan_after = self.plan.orphan_after_seconds
        seen: tuple[str, float] | None = None  # the supervisor's heartbeat, when it last changed
        beat = 0
        while True:
            beat += 1
            try:
                with open(path + ".tmp", "w") as fh:
                    json.dump({"beat": beat, "host": socket.gethostname(), "time": time.time()}, fh)
                os.replace(path + ".tmp", path)
            except OSError:
                pass  # the folder is being removed: the run is ending
            if orphan_after > 0:
                try:
                    with open(self.paths.supervisor_alive) as fh:
                        theirs = fh.read()
                except OSError:
                    theirs = None
                now = time.monotonic()
                if theirs is not None and (seen is None or seen[0] != theirs):
                    seen = (theirs, now)
                elif seen is not None and now - seen[1] > orphan_after:
                    print(f"torchyard launcher: the run's supervisor has been silent for {now - seen[1]:.0f} s; "
                          "stopping this node's ranks", file=sys.stderr, flush=True)
                    self.orphaned = True
                    os.kill(os.getpid(), signal.SIGTERM)  # the main loop stops the ranks and reports
                    return
            if stop.wait(self.plan.heartbeat_seconds):
                return

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)
        stop = threading.Event()
        if self.plan.heartbeat_seconds > 0:
            threading.Thread(target=self._beat, args=(stop,), daemon=True, name="heartbeat").start()
        self._sample_system(stop)
        pusher = self._start_pusher()
        try:
            return self._run()
        finally:
            stop.set()
            if pusher is not None:
                self._end_pusher(pusher)

    def _sample_system(self, stop: threading.Event) -> None:
        """This node's system/... metrics into the run's journals until ``stop`` (torchyard.launch.sampler)."""
        from torchyard.launch import sampler  # noqa: PLC0415

        plan = self.plan
        sampler.start(self.paths.journal, plan.node_rank * plan.nproc, sampler.interval(plan.user_env), self.gpus, stop)

    def _start_pusher(self) -> subprocess.Popen[bytes] | None:
        """With ``report_url``: torchyard.compute.mirror_push, sending this node's logs, journals and
        report to the team server (a program, as the bootstrap is: the launcher stays stdlib + msgspec)."""
        plan = self.plan
        if not plan.report_url:
            return None
        if not self.run_token:
            raise SystemExit("torchyard launcher: the plan reports to a team server but TORCHYARD_RUN_TOKEN is not set")
        log = open(self.paths.target_file(f"mirror_push_node_{plan.node_rank}.txt"), "ab")  # noqa: SIM115
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "torchyard.compute.mirror_push", plan.report_url, plan.run_id,
                 str(plan.node_rank), self.workdir],
                env={**os.environ, "TORCHYARD_RUN_TOKEN": self.run_token}, stdin=subprocess.PIPE, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.workdir,
                preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, WAITED))  # it outlives us to flush
        finally:
            log.close()

    def _end_pusher(self, pusher: subprocess.Popen[bytes]) -> None:
        """Tell the pusher the node is done (its stdin closes) and wait until it has sent the rest."""
        if pusher.stdin is not None:
            pusher.stdin.close()
        try:
            pusher.wait(float(os.environ.get("TORCHYARD_REPORT_LINGER") or 300) + 30)
        except (subprocess.TimeoutExpired, ValueError):
            pusher.kill()
            pusher.wait()

    def _run(self) -> int:
        started = time.time()
        if self.plan.bootstrap is not None:
            placed = self._bootstrap()
            if placed is None:
                return self._report(started, "placement_failed", 1, {
                    "rank": -1, "node_rank": self.plan.node_rank, "time": time.time(), "exit_code": 1,
                    "stage": "Preparing", "log": self.paths.log(f"bootstrap_node_{self.plan.node_rank}.txt")})
            self.plan = self.plan.placed(placed)
            self.node = self._node_env()
        self.start()
        first: dict[str, Any] | None = None
        reason = "completed"
        while True:
            done = True
            for rank, proc in self.procs.items():
                rc = proc.poll()
                if rc is None:
                    done = False
                elif rc != 0 and first is None:
                    first = self._failure(rank, rc)
            if first is not None:
                reason = "rank_failed"
                break
            if done:
                break
            if self.stop_signal is not None:
                reason = "supervisor_lost" if self.orphaned else "terminated"
                break
            if os.getppid() != self.parent and not self.plan.outlives_supervisor:
                reason = "parent_died"
                break
            if not self.stacks_dumped and os.path.exists(self.paths.stacks_request):
                self.stacks_dumped = True
                self.dump_stacks()
                continue
            self._wait(1.0)
        self._stop_all()
        if first is not None and first["rank"] < 0:
            first = self._first_from_exit_files() or first
        code = 0 if reason == "completed" else (first["exit_code"] if first else 128 + (self.stop_signal or 15))
        return self._report(started, reason, code, first)

    # ---- hang stacks -------------------------------------------------------------------------------

    def _rank_pids(self) -> dict[int, tuple[int, int]]:
        """{rank: (pid, signal)} of this node's Python ranks that installed the stack dump (rankboot)."""
        host = socket.gethostname()
        everyone = self.plan.mode == "mpi"  # one launcher for every (simulated) node's ranks
        found: dict[int, tuple[int, int]] = {}
        try:
            names = os.listdir(self.paths.stacks)
        except OSError:
            return found
        for name in names:
            if not (name.startswith("rank_") and name.endswith(".pid")):
                continue
            try:
                with open(os.path.join(self.paths.stacks, name)) as fh:
                    pid_s, their_host, node_s, sig_s = fh.read().split()
                rank, pid = int(name[5:-4]), int(pid_s)
            except (OSError, ValueError):
                continue
            if their_host == host and (everyone or int(node_s) == self.plan.node_rank):
                found[rank] = (pid, int(sig_s))
        return found

    def dump_stacks(self) -> dict[int, str]:
        """Ask every rank of this node for its Python stacks (the signal its faulthandler waits on, else
        ``py-spy dump`` when installed) and put them in ``logs/stacks_rank_N.txt``; then mark the node
        done. Returns {rank: file}."""
        pids = self._rank_pids()
        if self.plan.mode == "direct":  # a rank whose interpreter skipped rankboot (python -I): py-spy only
            for rank, proc in self.procs.items():
                pids.setdefault(rank, (proc.pid, 0))
        sent: dict[int, str] = {}
        for rank, (pid, signum) in pids.items():
            if signum:
                try:
                    os.kill(pid, signum)
                except (ProcessLookupError, PermissionError):
                    continue
                sent[rank] = os.path.join(self.paths.stacks, f"rank_{rank}.txt")
        deadline = time.monotonic() + STACKS_WAIT
        sizes: dict[int, int] = {}
        while sent and time.monotonic() < deadline:  # until every file has stopped growing
            now = {r: _size(p) for r, p in sent.items()}
            if all(now.values()) and now == sizes:
                break
            sizes = now
            time.sleep(0.1)
        out: dict[int, str] = {}
        for rank, path in sent.items():
            if _size(path):
                out[rank] = self._keep_stacks(rank, path)
        pyspy = shutil.which("py-spy")
        for rank, (pid, _signum) in pids.items():
            if rank not in out and pyspy:
                try:
                    res = subprocess.run([pyspy, "dump", "--pid", str(pid)], capture_output=True, timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    continue
                if res.returncode == 0 and res.stdout:
                    tmp = self.paths.stacks_log(rank) + ".tmp"
                    with open(tmp, "wb") as fh:
                        fh.write(b"# py-spy dump\n" + res.stdout)
                    os.replace(tmp, self.paths.stacks_log(rank))
                    out[rank] = self.paths.stacks_log(rank)
        try:
            with open(self.paths.stacks_done(self.plan.node_rank), "w") as fh:
                json.dump({str(r): p for r, p in out.items()}, fh)
        except OSError:
            pass
        return out

    def _keep_stacks(self, rank: int, path: str) -> str:
        dest = self.paths.stacks_log(rank)
        shutil.copyfile(path, dest + ".tmp")
        os.replace(dest + ".tmp", dest)
        return dest

    def _report(self, started: float, reason: str, code: int, first: dict[str, Any] | None) -> int:
        status = {
            "node_rank": self.plan.node_rank,
            "reason": reason,
            "exit_code": code,
            "first_failure": first,
            "started": started,
            "ended": time.time(),
            "ranks": {str(r): p.returncode for r, p in self.procs.items()},
            # what this node's ranks wrote, for the supervisor to check that it all came back (runtime.returned)
            "returned": _written(self.plan.paths),
        }
        tmp = self.plan.status_path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(status, fh)
        os.replace(tmp, self.plan.status_path)
        return int(code)

    def _failure(self, rank: int, rc: int) -> dict[str, Any]:
        info: dict[str, Any] = {"rank": rank, "node_rank": self.plan.node_rank, "time": time.time()}
        if rc < 0:
            info["signal"] = signal.Signals(-rc).name
            info["exit_code"] = 128 - rc
        else:
            info["exit_code"] = rc
        return info

    def _first_from_exit_files(self) -> dict[str, Any] | None:
        """Under mpirun the launcher sees one process; each rank's shim left its exit code and time."""
        return first_failure_in(self.exit_dir, self.plan.nproc)

    def _stop_all(self) -> None:
        live = [p for p in self.procs.values() if p.poll() is None]
        for p in live:
            _kill_group(p, signal.SIGTERM)
        # preempted: the ranks' time to commit a checkpoint (run.preempted, TORCHYARD_PREEMPT_FLAG)
        grace = self.plan.preempt_grace_seconds if os.path.exists(self.paths.preempted) else self.grace
        deadline = time.time() + grace
        while live and time.time() < deadline:
            live = [p for p in live if p.poll() is None]
            if live:
                self._wait(min(POLL, max(0.0, deadline - time.time())))
        for p in self.procs.values():
            _kill_group(p, signal.SIGKILL)  # the group may hold children even if the rank exited
        for p in self.procs.values():
            p.wait()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def first_failure_in(exit_dir: str, nproc: int) -> dict[str, Any] | None:
    """The earliest non-zero exit among the ``rank_N`` files the mpi shim leaves in ``exit_dir``."""
    best: tuple[float, int, int] | None = None
    try:
        names = os.listdir(exit_dir)
    except OSError:
        return None
    for name in names:
        try:
            with open(os.path.join(exit_dir, name)) as fh:
                rc_s, ts_s = fh.read().split()
            rc, ts, rank = int(rc_s), float(ts_s), int(name.split("_")[1])
        except (OSError, ValueError, IndexError):
            continue
        if rc != 0 and (best is None or ts < best[0]):
            best = (ts, rank, rc)
    if best is None:
        return None
    ts, rank, rc = best
    info: dict[str, Any] = {"rank": rank, "node_rank": rank // max(nproc, 1), "time": ts, "exit_code": rc}
    if rc > 128:
        try:
            info["signal"] = signal.Signals(rc - 128).name
        except ValueError:
            pass
    return info


#: descriptors a forked launcher closes at once (the supervisor's run lock: a launcher that outlives
#: its supervisor must not keep the lock from the one that replaces it)
CLOSE_IN_FORKS: set[int] = set()


def fork_launcher(plan: NodePlan, parent_death_signal: int = signal.SIGTERM) -> int:
    """Run a Launcher for ``plan`` in a forked child of this (single-threaded) process; returns its
    pid. Saves a Python start-up per node on local compute; ``main`` is the same thing as a program.
    With ``plan.outlives_supervisor`` the child is not told of its parent's death."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.setsid()
        for fd in CLOSE_IN_FORKS:
            try:
                os.close(fd)
            except OSError:
                pass
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        _die_with_parent(0 if plan.outlives_supervisor else parent_death_signal)
        code = Launcher(plan).run()
    except BaseException:
        import traceback  # noqa: PLC0415

        traceback.print_exc()
    finally:
        os._exit(code)


def _written(paths: RunPaths) -> dict[str, dict[str, int]]:
    """The sizes of the rank journals and rank logs in this node's run folder, by rank."""
    out: dict[str, dict[str, int]] = {"journals": {}, "logs": {}}
    for key, folder, prefix, suffix in (("journals", paths.journal, "rank_", ".journal"),
                                        ("logs", paths.logs, "rank_", ".txt")):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            rank = name[len(prefix):-len(suffix)] if name.startswith(prefix) and name.endswith(suffix) else ""
            if rank.isdigit():
                try:
                    out[key][rank] = os.path.getsize(os.path.join(folder, name))
                except OSError:
                    continue
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m torchyard.launch.launcher PLAN.json", file=sys.stderr)
        return 2
    with open(args[0], "rb") as fh:
        plan = NodePlan.from_json(fh.read())
    return Launcher(plan).run()


if __name__ == "__main__":
    sys.exit(main())

