"""The supervisor's side of a Ray job: a placement group, one NodeAgent actor per bundle, and a
non-blocking :class:`RayHandle` the supervisor's loop drives.

The handle is a small state machine advanced by ``poll()`` without ever blocking on Ray:
placing (the placement group waits for resources: ``queued()`` says why) → setting up (each actor
unpacks the snapshot and builds the environment on its node) → running (each actor's launcher) →
done. Logs and journals stream back through ``sync()``; ``collect()`` brings ``outputs/`` home;
``release()`` kills the actors, removes the placement group and disconnects, whatever happened.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from typing import Any

from torchyard.compute.base import Handle, LaunchPlan, NodeLaunch, PreparedJob, common_plan, status_path
from torchyard.compute.mirror import Mirror
from torchyard.compute.ray_node import NodeAgent, NodePool, mpi_session_base, pack, remove_run_folder, unpack
from torchyard.errors import ComputeError
from torchyard.paths import NOT_CODE as NOT_CODE_DIRS
from torchyard.paths import RunPaths
from torchyard.status import RunStatus

NOT_CODE = NOT_CODE_DIRS
REASON_EVERY = 2.0
NODE_CHECK_EVERY = 1.0


def bundles(target: Any, job: PreparedJob) -> list[dict[str, float]]:
    dist = job.spec.distribution
    bundle: dict[str, float] = {"CPU": target.cpus_per_process * dist.process_count_per_node}
    if job.spec.use_gpu:
        bundle["GPU"] = float(dist.process_count_per_node)
    if not any(bundle.values()):
        bundle = {"CPU": 0.001}  # a bundle needs some resource; this still pins one node per bundle
    return [dict(bundle) for _ in range(dist.node_count)]


def prepare(target: Any, job: PreparedJob) -> LaunchPlan:
    """Node plans with what only Ray can tell (node 0's address, each node's folder) left open."""
    dist = job.spec.distribution
    common = common_plan(job, master_addr="<node 0's Ray address>", master_port=0, workdir="<node folder>")
    nodes = []
    for node_rank in range(dist.node_count):
        plan = common.replace(node_rank=node_rank)
        if common.mode == "mpi":
            plan = plan.replace(hosts=[(f"ray-node-{k}", dist.process_count_per_node) for k in range(dist.node_count)])
        nodes.append(NodeLaunch(node_rank=node_rank, plan=plan, argv=["<NodeAgent actor>", "launcher", f"node {node_rank}"]))
    placement = {
        "address": target.address,
        "strategy": target.placement,
        "bundles": bundles(target, job),
        "workdir": job.workdir,
        "python": job.rank_python,
        "bootstrap": job.bootstrap,
    }
    return LaunchPlan(target=target.name, nodes=nodes, files={"ray placement group": json.dumps(placement, indent=2)})


def submit(target: Any, plan: LaunchPlan) -> RayHandle:
    import ray  # noqa: PLC0415

    placement = json.loads(plan.files["ray placement group"])
    _check_reachable(target.address)
    _connect(ray, target.address)
    try:
        return RayHandle(target, plan, placement)
    except Exception as err:  # an unreadable code folder, a snapshot too big for the object store, ...
        ray.shutdown()  # also removes what this driver made (its placement group, its actors)
        raise ComputeError(f"could not place the job on the Ray cluster at {target.address!r}: {_cause(err)}") from None


CLIENT_ATTEMPTS = 3


def _connect(ray: Any, address: str) -> None:
    """``ray.init`` with Ray's own signal handlers undone. Through Ray Client (``ray://``) the head
    starts a server process per connection, which can fail to start on a busy head; with the
    address known to answer, that is retried (``CLIENT_ATTEMPTS`` in all) before the run fails."""
    attempts = CLIENT_ATTEMPTS if address.startswith("ray://") else 1
    for attempt in range(1, attempts + 1):
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            ray.init(
                address=address,
                namespace="torchyard",
                log_to_driver=False,
                logging_level=logging.WARNING,
                configure_logging=True,
            )
            return
        except Exception as err:  # ConnectionError and Ray's own: all mean "no cluster there"
            failure = err
        finally:
            for sig, handler in handlers.items():  # ray.init installs its own (which exit the process)
                signal.signal(sig, handler)
        if attempt == attempts:
            tries = f" (after {attempts} attempts)" if attempts > 1 else ""
            raise _unreachable(address, failure, tries) from None
        print(f"torchyard ray: connecting to {address} failed (attempt {attempt} of {attempts}): "
              f"{_cause(failure)}; retrying", flush=True)
        try:
            ray.shutdown()
        except Exception:  # noqa: S110  (nothing connected to undo)
            pass
        time.sleep(2.0 * attempt)


class RayHandle(Handle):
    def __init__(self, target: Any, plan: LaunchPlan, placement: dict[str, Any]) -> None:
        import ray  # noqa: PLC0415
        from ray.util.placement_group import placement_group  # noqa: PLC0415

        self.ray = ray
        self.target = target
        self.plans = [n.plan for n in plan.nodes]
        self.workdir: str = placement["workdir"]
        self.local_python: str = placement["python"]
        self.bootstrap = placement.get("bootstrap")
        self.bundles: list[dict[str, float]] = placement["bundles"]
        self.strategy: str = placement["strategy"]
        self.node_count = len(self.bundles)
        self.mode = self.plans[0].mode
        self.snapshot = pack(self.workdir, exclude_top=NOT_CODE)  # before anything is made on the cluster
        self.pg = placement_group(self.bundles, strategy=self.strategy, name=f"torchyard-{self.plans[0].run_id}")
        self.pg_ready = self.pg.ready()
        self.state = "placing"
        self.reason: str | None = "waiting for the Ray cluster's answer"
        self.next_reason = 0.0
        self.actors: list[Any] = []
        self.setup_refs: list[Any] = []
        self.setups: list[dict[str, Any]] = []
        self.start_refs: list[Any] = []
        self.wait_refs: list[Any] = []
        self.codes: list[int | None] = []
        self.pull_refs: list[Any] = []
        self.mirror = Mirror(self.workdir, self.node_count)
        self.failure: tuple[RunStatus, str] | None = None
        self.rc: int | None = None
        self.canceled = False
        self.drained = False
        self.next_node_check = 0.0
        self.timings: dict[str, float] = {"connected": time.time()}
        self.pooled = bool(getattr(target, "keep_agents", False))
        if not self.pooled:
            self._create_actors()  # Ray schedules them as soon as the placement group is ready

    # ---- the state machine -----------------------------------------------------------------------

    def _ready(self, refs: list[Any]) -> bool:
        done, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        return len(done) == len(refs)

    def poll(self) -> int | None:
        try:
            self._advance()
        except self.ray.exceptions.RayActorError as err:
            self._lost(err)
        except self.ray.exceptions.RayTaskError as err:
            self._fail(f"a node could not be set up: {_cause(err)}")
        except self.ray.exceptions.RayError as err:  # an object lost with its node, Ray's own failures
            self._fail(f"Ray failed the job: {_cause(err)}")
        except ConnectionError as err:  # a Ray Client connection that broke
            self._fail(f"lost the connection to the Ray cluster at {self.target.address!r}: {err}")
        return self.rc

    def wait(self, timeout: float) -> bool:
        """Until the next of the refs this state waits on is ready (the placement group, a node's
        setup, a launcher started or ended), at most ``timeout``."""
        ray = self.ray
        if self.state == "placing":
            pending = [self.pg_ready]
        elif self.state == "setting up":
            pending = ray.wait(self.setup_refs, num_returns=len(self.setup_refs), timeout=0)[1]
        elif self.state == "running":
            pending = list(self.start_refs) + [r for k, r in enumerate(self.wait_refs)
                                               if k < len(self.codes) and self.codes[k] is None]
            pending = ray.wait(pending, num_returns=len(pending), timeout=0)[1] if pending else []
        else:
            return False
        if not pending:
            return False
        try:
            ray.wait(pending, num_returns=1, timeout=max(0.0, timeout))
        except Exception:  # noqa: BLE001 - a broken connection shows at the next poll
            return False
        return True

    def _advance(self) -> None:
        ray = self.ray
        if self.rc is not None:
            return
        if self.state == "placing":
            if self.canceled:
                self.rc = 130
                return
            if not self._ready([self.pg_ready]):
                return
            self.reason = None
            self.timings["placed"] = time.time()
            if self.pooled:
                self._pool_slots()
            self.state = "setting up"
        if self.state == "setting up":
            if self.canceled:
                self.rc = 130
                return
            done, _ = ray.wait(self.setup_refs, num_returns=len(self.setup_refs), timeout=0)
            for ref in done:
                ray.get(ref)  # a node whose setup failed fails the run now, not once every node is done
            if len(done) < len(self.setup_refs):
                return
            self.setups = ray.get(self.setup_refs)
            self.timings["set_up"] = time.time()
            self._start()
            self.timings["started"] = time.time()
            self.state = "running"
        if self.state == "running":
            if self.start_refs:
                started, _ = ray.wait(self.start_refs, num_returns=len(self.start_refs), timeout=0)
                for ref in started:
                    ray.get(ref)  # a launcher that could not start fails the run (RayTaskError)
                    self.start_refs.remove(ref)
            done, _ = ray.wait(self.wait_refs, num_returns=len(self.wait_refs), timeout=0)
            for ref in done:
                k = self.wait_refs.index(ref)
                if self.codes[k] is None:
                    self.codes[k] = int(ray.get(ref))
            failed = [c for c in self.codes if c not in (None, 0)]
            if failed and not self.canceled:
                self.cancel()  # one node failed: stop the others now
            if all(c is not None for c in self.codes):
                self.rc = failed[0] if failed else 0
                self.state = "done"
                return
            now = time.time()
            if now >= self.next_node_check:
                self.next_node_check = now + NODE_CHECK_EVERY
                self._check_nodes()

    def _create_actors(self) -> None:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy  # noqa: PLC0415

        agent: Any = self.ray.remote(NodeAgent)
        run_id = self.plans[0].run_id
        snapshot = self.ray.put(self.snapshot)
        for k, bundle in enumerate(self.bundles):
            actor = agent.options(
                name=f"torchyard-{run_id}-node-{k}",
                num_cpus=bundle.get("CPU", 0),
                num_gpus=bundle.get("GPU", 0),
                max_concurrency=8,
                max_restarts=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=self.pg, placement_group_bundle_index=k
                ),
            ).remote(run_id, k)
            self.actors.append(actor)
            self.setup_refs.append(actor.setup.remote(snapshot, self.bootstrap, k == 0, self._forwarded()))
        self.mirror = Mirror(self.workdir, len(self.actors))
        self.pull_refs = [None] * len(self.actors)
        self.codes = [None] * len(self.actors)

    def _pool_slots(self) -> None:
        """With ``keep_agents``: each bundle's node's warm agent (created on its first use, detached,
        no resources of its own), called for this run's node through a :class:`_Slot`."""
        from ray.util.placement_group import placement_group_table  # noqa: PLC0415
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415

        where = placement_group_table(self.pg).get("bundles_to_node_id", {})
        pool: Any = self.ray.remote(NodePool)
        run_id = self.plans[0].run_id
        snapshot = self.ray.put(self.snapshot)
        for k in range(len(self.bundles)):
            node_id = where[k]
            agent = pool.options(
                name=f"torchyard-agents-{POOL_TAG}-{node_id[:16]}", namespace="torchyard", lifetime="detached",
                get_if_exists=True, num_cpus=0, max_concurrency=64, max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote()
            slot = _Slot(agent, run_id, k)
            self.actors.append(slot)
            self.setup_refs.append(slot.setup.remote(snapshot, self.bootstrap, k == 0, self._forwarded()))
        self.mirror = Mirror(self.workdir, len(self.actors))
        self.pull_refs = [None] * len(self.actors)
        self.codes = [None] * len(self.actors)

    def _forwarded(self) -> dict[str, str]:
        """The credential variables a datastore forwards (``credentials="forward"``): their values,
        from this supervisor's environment, travel only as an actor call's argument (in memory)."""
        names = (self.bootstrap or {}).get("forward_env") or ()
        return {name: os.environ[name] for name in names if name in os.environ}

    def _start(self) -> None:
        ray = self.ray
        head = self.setups[0]
        user_env: dict[str, str] = {}
        if self.mode == "mpi":
            table = ray.get([a.rsh_server.remote() for a in self.actors])
            user_env["TORCHYARD_RAY_RSH"] = json.dumps({f"ray-node-{k}": entry for k, entry in enumerate(table)})
        for k, (actor, setup) in enumerate(zip(self.actors, self.setups, strict=True)):
            if self.mode == "mpi" and k > 0:
                self.wait_refs.append(ray.put(0))  # node 0's mpirun starts this node's ranks
                continue
            plan = self.plans[k].replace(
                workdir=setup["workdir"],
                master_addr=head["ip"],
                master_port=int(head["port"]),
                argv=_node_argv(self.plans[k].argv, self.local_python, setup["python"]),
                user_env={**self.plans[k].user_env, **user_env},
            )
            if self.mode == "mpi":
                plan = plan.replace(mpi_args=[
                    "--mca", "plm_rsh_agent", f"{setup['launcher_python']} -m torchyard.compute.ray_rsh",
                    # no shared-memory topology: orted daemons started from Ray's workers could crash
                    # writing it (a segfault in hwloc_shmem_topology_write, seen here with two nodes on
                    # one machine); binding is off anyway (--bind-to none)
                    "--mca", "rtc_hwloc_vmhole", "none",
                    # this run's own session folders (see mpi_session_base), on every node
                    "--mca", "orte_tmpdir_base", mpi_session_base(self.plans[0].run_id),
                ])
            self.start_refs.append(actor.start.remote(plan.to_dict()))
            self.wait_refs.append(actor.wait.remote())

    def _check_nodes(self) -> None:
        """A Ray node that died takes its ranks with it: fail the run naming the node."""
        alive = {n["NodeID"]: n for n in self.ray.nodes() if n.get("Alive")}
        for k, setup in enumerate(self.setups):
            if setup["node_id"] not in alive and self.codes[k] is None:
                self._fail(f"Ray node {setup['ip']} ({setup['node_id'][:12]}) holding node {k} of the job died")
                return

    def _lost(self, err: Exception) -> None:
        which = next((k for k, a in enumerate(self.actors) if _actor_id(a) in str(err)), None)
        where = f"node {which} of the job" if which is not None else "a node of the job"
        if which is not None and which < len(self.setups):
            where += f" on Ray node {self.setups[which]['ip']} ({self.setups[which]['node_id'][:12]})"
        self._fail(f"the Ray actor running {where} died: {_cause(err)}")

    def _fail(self, message: str) -> None:
        if self.failure is None and not self.canceled:
            self.failure = (RunStatus.FAILED, message)
        self.cancel()
        self.rc = self.rc if self.rc is not None else 1
        self.state = "done"

    # ---- what the supervisor asks ----------------------------------------------------------------

    def queued(self) -> str | None:
        if self.state != "placing":
            return None
        now = time.time()
        if now >= self.next_reason:
            self.next_reason = now + REASON_EVERY
            self.reason = self._why_waiting()
        return self.reason

    def _why_waiting(self) -> str:
        want = self.bundles[0]
        what = " and ".join(f"{v:g} {k}" for k, v in want.items())
        try:
            nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        except Exception:  # noqa: BLE001  (the cluster did not answer this time: say so, ask again later)
            return f"waiting for {self.node_count} node(s) with {what} each ({self.strategy})"
        fitting = sum(1 for n in nodes if all(n.get("Resources", {}).get(k, 0) >= v for k, v in want.items()))
        return (
            f"waiting for {self.node_count} node(s) with {what} each ({self.strategy}); "
            f"the Ray cluster has {len(nodes)} node(s), {fitting} of them big enough"
        )

    def cancel(self) -> None:
        self.canceled = True
        for actor in self.actors:
            try:
                actor.stop.remote()
            except Exception:  # an actor already gone has nothing left to stop
                pass

    def details(self) -> dict[str, Any]:
        nodes = [{"node": k, "ip": s["ip"], "ray_node_id": s["node_id"], "agent_pid": s["pid"]}
                 for k, s in enumerate(self.setups)]
        return {
            "placement_group": self.pg.id.hex(),
            "strategy": self.strategy,
            "warm_agents": self.pooled,
            "nodes": nodes,
            "timings": dict(self.timings),  # epoch seconds: connected, placed, set_up, started
        }

    def ended_by(self) -> tuple[RunStatus, str] | None:
        return self.failure

    def sync(self) -> None:
        ray = self.ray
        if self.rc is not None:
            self._drain()  # the job is over: everything, to the last byte, before the final ingest
            return
        for k, actor in enumerate(self.actors[: len(self.setups)]):
            ref = self.pull_refs[k]
            if ref is None:
                self.pull_refs[k] = actor.pull.remote(self.mirror.offsets[k])
                continue
            done, _ = ray.wait([ref], timeout=0)
            if not done:
                continue
            self.pull_refs[k] = None
            try:
                chunks = ray.get(ref)
            except ray.exceptions.RayError:
                continue  # a dead actor: poll() reports it
            self._apply(k, chunks)
            if chunks:
                self.pull_refs[k] = actor.pull.remote(self.mirror.offsets[k])

    def _apply(self, k: int, chunks: dict[str, Any]) -> None:
        self.mirror.apply(k, chunks)

    def _drain(self) -> None:
        """Everything the nodes wrote, to the last byte (called once the launchers are done)."""
        ray = self.ray
        if self.drained:
            return
        self.drained = True
        for k, actor in enumerate(self.actors[: len(self.setups)]):
            ref = self.pull_refs[k]
            self.pull_refs[k] = None
            try:
                if ref is not None:
                    self._apply(k, ray.get(ref, timeout=10))
                while chunks := ray.get(actor.pull.remote(self.mirror.offsets[k]), timeout=10):
                    self._apply(k, chunks)
            except ray.exceptions.RayError:
                continue

    def collect(self) -> None:
        self._drain()
        ray = self.ray
        rel = RunPaths.relative()
        every = getattr(self.target, "collect_all_outputs", False)
        for k, actor in enumerate(self.actors[: len(self.setups)]):
            if k > 0 and not every:
                break
            wanted = list(RunPaths.collected()) if k == 0 else [rel.outputs]  # another node: its outputs
            try:
                data = ray.get(actor.outputs.remote(wanted), timeout=120)
            except ray.exceptions.RayError as err:
                raise ComputeError(f"node {k}'s outputs could not be fetched: {_cause(err)}") from None
            if k == 0:
                unpack(data, self.workdir)
                continue
            with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:  # node K's outputs/ → outputs/node_K/
                unpack(data, tmp)
                if os.path.isdir(os.path.join(tmp, rel.outputs)):
                    shutil.copytree(os.path.join(tmp, rel.outputs), self.mirror.outputs_destination(k),
                                    dirs_exist_ok=True)

    def node_statuses(self) -> list[dict[str, Any]]:
        out = []
        for k in range(self.node_count):
            try:
                with open(status_path(self.workdir, k)) as fh:
                    out.append(json.load(fh))
            except (OSError, ValueError):
                continue
        return out

    def release(self) -> None:
        ray = self.ray
        try:
            # Whether this handle saw it or not, a placed group's actors may have set up (or be setting
            # up) their node folders: placed actors clean up; where one could not, a task does after it.
            placed = self.state != "placing" or self._ready([self.pg_ready])
            cleanups: list[Any] = []
            if self.actors and placed:
                cleanups = [a.cleanup.remote() for a in self.actors]
                ray.wait(cleanups, num_returns=len(cleanups), timeout=15)
            for actor in self.actors:
                if not isinstance(actor, _Slot):  # a warm agent stays for the next run
                    ray.kill(actor, no_restart=True)
            if cleanups:
                _clean_after(ray, self.pg, self.plans[0].run_id, cleanups)
            from ray.util.placement_group import remove_placement_group  # noqa: PLC0415

            remove_placement_group(self.pg)
        except Exception as err:  # the job is over either way; say what may be left behind
            print(f"torchyard ray: cleanup incomplete: {err}", flush=True)
        finally:
            ray.shutdown()


def _clean_after(ray: Any, pg: Any, run_id: str, cleanups: list[Any]) -> None:
    """Where a node's actor did not clean up (it died, or was killed while still setting up), a task
    pinned to that bundle's Ray node removes the node's folder."""
    from ray.util.placement_group import placement_group_table  # noqa: PLC0415
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415

    alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
    where = placement_group_table(pg).get("bundles_to_node_id", {})
    refs = []
    for k, ref in enumerate(cleanups):
        try:
            ray.get(ref, timeout=0)
            continue
        except Exception:  # noqa: S112  (died, or still busy: clean from outside)
            pass
        node_id = where.get(k)
        if node_id in alive:
            task = ray.remote(remove_run_folder).options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
            )
            refs.append(task.remote(run_id, k))
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=15)


def _check_reachable(address: str) -> None:
    """Fail in seconds, not minutes, when nothing listens at a HOST:PORT address."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise _unreachable(address, err) from None


def _unreachable(address: str, err: Exception, tries: str = "") -> ComputeError:
    return ComputeError(
        f"cannot connect to the Ray cluster at {address!r}{tries}: {err}; "
        "is it running (`ray status`), and is the address right?"
    )


def _node_argv(argv: list[str], local_python: str, node_python: str) -> list[str]:
    """The rank command with this machine's interpreter replaced by the node's."""
    if not local_python or local_python == node_python:
        return list(argv)
    if argv and argv[0] == local_python:  # python SCRIPT ARGS...
        return [node_python, *argv[1:]]
    # /bin/sh -c 'PATH="<python's folder>:$PATH"; COMMAND': only that PATH prefix names the interpreter
    local_path = f'PATH="{os.path.dirname(local_python)}:'
    node_path = f'PATH="{os.path.dirname(node_python)}:'
    return [a.replace(local_path, node_path, 1) if a.startswith(local_path) else a for a in argv]


class _Slot:
    """A run's node on a warm agent: ``slot.setup.remote(...)`` calls ``agent.setup.remote(run_id,
    node_rank, ...)``, so the handle drives pooled and per-run agents alike."""

    def __init__(self, agent: Any, run_id: str, node_rank: int) -> None:
        self.agent = agent
        self.run_id = run_id
        self.node_rank = node_rank

    def __getattr__(self, method: str) -> _SlotMethod:
        return _SlotMethod(getattr(self.agent, method), self.run_id, self.node_rank)


class _SlotMethod:
    def __init__(self, bound: Any, run_id: str, node_rank: int) -> None:
        self.bound, self.run_id, self.node_rank = bound, run_id, node_rank

    def remote(self, *args: Any) -> Any:
        return self.bound.remote(self.run_id, self.node_rank, *args)


def _pool_tag() -> str:
    """Warm agents are named after the node code they run: a changed torchyard starts new ones."""
    import hashlib  # noqa: PLC0415

    from torchyard.compute import ray_node  # noqa: PLC0415

    with open(ray_node.__file__, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()[:10]


POOL_TAG = _pool_tag()


def _actor_id(actor: Any) -> str:
    if isinstance(actor, _Slot):
        actor = actor.agent
    try:
        return str(actor._actor_id.hex())
    except AttributeError:
        return "?"


def _cause(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__
