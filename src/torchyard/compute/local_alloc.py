"""GPUs and run slots of a local compute target, shared by every supervisor on this machine.

A local target that declares GPUs (its option ``gpus``, or the ones found on the machine) or a
``max_concurrent_runs`` admits runs here before their launchers start. Who starts is decided by one
pure rule, :func:`admit`: waiting runs in order of ``priority`` (higher first), then fair share
(the user with fewer GPUs running first), then age; each run that fits starts, and once a run
needing GPUs does not fit, no run behind it takes GPUs (no backfill: a big run is never starved by
small ones queued after it). Runs that need no GPU are held back only by ``max_concurrent_runs``.

The state is a small JSON ledger, ``<workspace>/local_alloc/ledger.json``, read and written under
an exclusive lock on ``ledger.lock`` by the supervisors themselves (there is no daemon): each holder
and each waiting run is recorded with its run id and its supervisor's pid and start time, so the
GPUs of a supervisor that died (``kill -9``, a reboot) are taken back by the next one that looks.

Preemption: a waiting run that needs GPUs it cannot get may take them from running runs that
declared ``preemptible`` and have a lower priority (:func:`choose_victims`: lowest priority first,
then the newest, only as many as it needs). The ledger marks them; the waiting run's supervisor
preempts them (``torchyard cancel --requeue``'s path: a grace to checkpoint), and they come back to
the queue to resume later from their checkpoints.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Request:
    """A waiting run: how many GPUs it needs, its priority, its user and when it was submitted."""

    run_id: str
    gpus: int = 0
    priority: int = 0
    user: str = ""
    submitted: float = 0.0
    #: a higher-priority run may preempt this one once it runs (it resumes from its checkpoint)
    preemptible: bool = False
    experiment: str = ""


#: quotas by ``user:NAME`` or ``experiment:NAME``: ``{"gpus": N or None, "runs": N or None}``
Quotas = Mapping[str, Mapping[str, Any]]


def _quota_keys(req: Request) -> list[str]:
    return [f"user:{req.user}", f"experiment:{req.experiment}"]


def _over_quota(req: Request, quotas: Quotas, gpus_used: Mapping[str, int], runs_used: Mapping[str, int]
                ) -> str | None:
    """Why ``req`` may not start now under ``quotas`` (None when it may)."""
    for key in _quota_keys(req):
        quota = quotas.get(key)
        if not quota:
            continue
        kind, _, name = key.partition(":")
        cap = quota.get("gpus")
        if cap is not None and req.gpus > 0 and gpus_used.get(key, 0) + req.gpus > int(cap):
            return (f"waiting for {kind} {name}'s quota: {gpus_used.get(key, 0)} of {int(cap)} "
                    f"{'GPU' if int(cap) == 1 else 'GPUs'} in use, {_plural(req.gpus, 'GPU')} asked")
        cap = quota.get("runs")
        if cap is not None and runs_used.get(key, 0) + 1 > int(cap):
            return f"waiting for {kind} {name}'s quota: {runs_used.get(key, 0)} of {_plural(int(cap), 'run')} running"
    return None


@dataclass(frozen=True)
class Admission:
    """What :func:`admit` decided: the runs that start now (in order) and why each other one waits."""

    started: list[str] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def choose_victims(holders: Mapping[str, Mapping[str, Any]], need: int, free: int, priority: int) -> list[str]:
    """Pure: the running runs (``holders``: run id → ``gpus``, ``priority``, ``preemptible``,
    ``since``, ``preempting_for``) to preempt so that a run of ``priority`` needing ``need`` GPUs fits,
    ``free`` being free now. Only preemptible runs of a lower priority that are not already being
    preempted; lowest priority first, then the newest; none when even all of them would not do."""
    short = need - free
    if short <= 0:
        return []
    freeing = sum(len(h["gpus"]) for h in holders.values() if h.get("preempting_for"))
    short -= freeing  # runs already yielding: their GPUs come back
    if short <= 0:
        return []
    candidates = sorted(
        ((run_id, h) for run_id, h in holders.items()
         if h.get("preemptible") and int(h.get("priority", 0)) < priority and not h.get("preempting_for")),
        key=lambda item: (int(item[1].get("priority", 0)), -float(item[1].get("since", 0.0)), item[0]))
    chosen: list[str] = []
    for run_id, holder in candidates:
        if short <= 0:
            break
        chosen.append(run_id)
        short -= len(holder["gpus"])
    return chosen if short <= 0 else []


def admit(requests: Sequence[Request], free_gpus: int, *, running_gpus: Mapping[str, int] | None = None,
          running_runs: int = 0, max_runs: int | None = None, quotas: Quotas | None = None,
          quota_gpus: Mapping[str, int] | None = None, quota_runs: Mapping[str, int] | None = None) -> Admission:
    """Pure: which of ``requests`` start given ``free_gpus`` free GPUs, the GPUs each user already
    runs on (``running_gpus``), how many runs are running and the target's ``max_runs``; with
    ``quotas`` (by ``user:NAME`` / ``experiment:NAME``) and what each of those keys already uses
    (``quota_gpus``, ``quota_runs``, over every target of the machine), a run over a quota waits
    without holding back the runs behind it.

    Order: higher ``priority`` first, then the user with fewer running GPUs (counting the runs this
    call starts, so two users' queues alternate), then the older request, then the run id."""
    usage = dict(running_gpus or {})
    q_gpus, q_runs = dict(quota_gpus or {}), dict(quota_runs or {})
    pending = list(requests)
    free, runs = free_gpus, running_runs
    started: list[str] = []
    behind: list[tuple[Request, str]] = []  # (request, what it waits for)
    gpu_blocked = False
    while pending:
        best = min(pending, key=lambda r: (-r.priority, usage.get(r.user, 0), r.submitted, r.run_id))
        pending.remove(best)
        over = _over_quota(best, quotas, q_gpus, q_runs) if quotas else None
        if over is not None:
            behind.append((best, over))
        elif max_runs is not None and runs >= max_runs:
            behind.append((best, "slot"))
        elif best.gpus > 0 and (gpu_blocked or best.gpus > free):
            gpu_blocked = True
            behind.append((best, "gpus"))
        else:
            started.append(best.run_id)
            free -= best.gpus
            runs += 1
            usage[best.user] = usage.get(best.user, 0) + best.gpus
            for key in _quota_keys(best):
                q_gpus[key] = q_gpus.get(key, 0) + best.gpus
                q_runs[key] = q_runs.get(key, 0) + 1
    waiting = {}
    for ahead, (req, why) in enumerate(behind):
        if why not in ("slot", "gpus"):  # a quota: its own reason
            waiting[req.run_id] = why
        elif why == "slot":
            waiting[req.run_id] = (f"waiting for a run slot; {runs} of max_concurrent_runs={max_runs} running; "
                                   f"{_plural(ahead, 'run')} ahead")
        else:
            waiting[req.run_id] = f"waiting for {_plural(req.gpus, 'GPU')}; {free} free; {_plural(ahead, 'run')} ahead"
    return Admission(started=started, waiting=waiting)


def _alive(pid: int, ctime: float) -> bool:
    """Whether process ``pid`` is the one that started at ``ctime`` (not a later one given its pid)."""
    import psutil  # noqa: PLC0415

    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - ctime) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _me() -> tuple[int, float]:
    import psutil  # noqa: PLC0415

    pid = os.getpid()
    return pid, psutil.Process(pid).create_time()


class Ledger:
    """The ledger of one workspace's local targets (``<workspace>/local_alloc``); see the module doc."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.path = os.path.join(folder, "ledger.json")

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        os.makedirs(self.folder, exist_ok=True)
        fd = os.open(os.path.join(self.folder, "ledger.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                with open(self.path) as fh:
                    state = json.load(fh)
            except (OSError, ValueError):
                state = {}
            state.setdefault("holders", {})
            state.setdefault("waiting", {})
            before = json.dumps(state, sort_keys=True)
            for kind in ("holders", "waiting"):  # a dead supervisor's entries: its GPUs come back
                for run_id, entry in list(state[kind].items()):  # (unless its launchers live on)
                    owners = [(entry["pid"], entry["ctime"]), *entry.get("launchers", [])]
                    if not any(_alive(int(pid), float(ctime)) for pid, ctime in owners):
                        del state[kind][run_id]
            yield state
            if json.dumps(state, sort_keys=True) != before:
                tmp = f"{self.path}.{os.getpid()}"
                with open(tmp, "w") as fh:
                    json.dump(state, fh, indent=1, sort_keys=True)
                os.replace(tmp, self.path)
        finally:
            os.close(fd)  # closing the descriptor drops the lock

    def try_start(self, target: str, devices: Sequence[str], max_runs: int | None, request: Request,
                  victims: list[str] | None = None) -> tuple[list[str] | None, str | None]:
        """Queue ``request`` on ``target`` (once) and run the admission rule over the target's queue:
        ``(devices, None)`` once it may start (the devices are then held in its name), else
        ``(None, reason)``. Runs to preempt for it, when it waits first in line for GPUs that
        preemptible lower-priority runs hold, are appended to ``victims`` (each once: the ledger marks
        them)."""
        pid, ctime = _me()
        with self._locked() as state:
            holders, waiting = state["holders"], state["waiting"]
            if request.run_id in holders:
                return list(holders[request.run_id]["gpus"]), None
            waiting.setdefault(request.run_id, {"pid": pid, "ctime": ctime, "target": target, "gpus": request.gpus,
                                                "priority": request.priority, "user": request.user,
                                                "submitted": request.submitted, "experiment": request.experiment})
            taken = {g for h in holders.values() for g in h["gpus"]}
            free = [d for d in devices if d not in taken]
            mine = [h for h in holders.values() if h["target"] == target]
            usage: dict[str, int] = {}
            for h in mine:
                usage[h["user"]] = usage.get(h["user"], 0) + len(h["gpus"])
            queue = [Request(run_id, int(w["gpus"]), int(w["priority"]), str(w["user"]), float(w["submitted"]),
                             experiment=str(w.get("experiment", "")))
                     for run_id, w in waiting.items() if w["target"] == target]
            quotas = self.quotas()
            q_gpus: dict[str, int] = {}
            q_runs: dict[str, int] = {}
            for h in holders.values():  # a quota counts every target of the machine
                for key in (f"user:{h['user']}", f"experiment:{h.get('experiment', '')}"):
                    q_gpus[key] = q_gpus.get(key, 0) + len(h["gpus"])
                    q_runs[key] = q_runs.get(key, 0) + 1
            decision = admit(queue, len(free), running_gpus=usage, running_runs=len(mine), max_runs=max_runs,
                             quotas=quotas, quota_gpus=q_gpus, quota_runs=q_runs)
            if request.run_id not in decision.started:
                reason = decision.waiting.get(request.run_id, "waiting")
                behind = [r for r in queue if r.run_id not in decision.started]
                first = min(behind, key=lambda r: (-r.priority, usage.get(r.user, 0), r.submitted, r.run_id))
                if victims is not None and request.gpus > 0 and first.run_id == request.run_id:
                    chosen = choose_victims({k: h for k, h in holders.items() if h["target"] == target},
                                            request.gpus, len(free), request.priority)
                    for run_id in chosen:
                        holders[run_id]["preempting_for"] = request.run_id
                    victims.extend(chosen)
                    if chosen:
                        reason += f"; preempting {', '.join(chosen)}"
                return None, reason
            # the devices of the runs the rule starts ahead of this one are left for them
            for run_id in decision.started:
                want = next(r.gpus for r in queue if r.run_id == run_id)
                got, free = free[:want], free[want:]
                if run_id == request.run_id:
                    del waiting[run_id]
                    holders[run_id] = {"pid": pid, "ctime": ctime, "target": target, "gpus": got,
                                       "user": request.user, "since": time.time(), "priority": request.priority,
                                       "preemptible": request.preemptible, "experiment": request.experiment}
                    return got, None
        return None, "waiting"  # not reached: a started run returns in the loop

    # ---- quotas (set by an admin: ``torchyard quota``) -------------------------------------------

    @property
    def quotas_path(self) -> str:
        return os.path.join(self.folder, "quotas.json")

    def quotas(self) -> dict[str, dict[str, Any]]:
        """Quotas by ``user:NAME`` / ``experiment:NAME``: ``{"gpus": N or None, "runs": N or None}``."""
        try:
            with open(self.quotas_path) as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return {}
        return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}

    def set_quota(self, key: str, gpus: int | None, runs: int | None) -> dict[str, Any]:
        """Set (or, with both None, remove) the quota of ``key`` (``user:NAME`` / ``experiment:NAME``)."""
        with self._locked():
            quotas = self.quotas()
            if gpus is None and runs is None:
                quotas.pop(key, None)
            else:
                quotas[key] = {"gpus": gpus, "runs": runs}
            tmp = f"{self.quotas_path}.{os.getpid()}"
            with open(tmp, "w") as fh:
                json.dump(quotas, fh, indent=1, sort_keys=True)
            os.replace(tmp, self.quotas_path)
        return quotas.get(key, {})

    def started(self, run_id: str, launchers: Sequence[tuple[int, float]]) -> None:
        """Record ``run_id``'s launchers (pid, start time): its GPUs stay held while they live, also
        when its supervisor is gone before another adopts them."""
        with self._locked() as state:
            if run_id in state["holders"]:
                state["holders"][run_id]["launchers"] = [list(x) for x in launchers]

    def adopt(self, run_id: str) -> None:
        """This process (a supervisor replacing a dead one) holds ``run_id``'s entry from now on."""
        pid, ctime = _me()
        with self._locked() as state:
            for kind in ("holders", "waiting"):
                if run_id in state[kind]:
                    state[kind][run_id].update(pid=pid, ctime=ctime)

    def release(self, run_id: str) -> None:
        """Give back what ``run_id`` holds and take it off the queue (idempotent)."""
        with self._locked() as state:
            state["holders"].pop(run_id, None)
            state["waiting"].pop(run_id, None)

    def snapshot(self) -> dict[str, Any]:
        """The ledger now (dead supervisors' entries dropped): ``{"holders": ..., "waiting": ...}``."""
        with self._locked() as state:
            return json.loads(json.dumps(state))
