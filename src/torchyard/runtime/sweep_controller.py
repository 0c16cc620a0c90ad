"""The sweep controller: one detached process per sweep, ``python -m torchyard.runtime.sweep_controller RUN_DIR``.

It walks the parent run Queued → Running → Completed/Failed/Canceled. Every ``POLL_SECONDS`` it
heart-beats into the store (so a dead controller is noticed as for any run), reads the children's
primary metric, applies the early-termination policy at each new interval (a stopped trial is
canceled with the policy's reason), and starts new trials (ordinary runs with ids ``<parent>_<i>``,
each with its own supervisor) while fewer than ``max_concurrent_runs`` are active and fewer than
``max_total_runs`` exist.

Its whole state is in the store: the parent's ``spec`` holds the sweep's definition and seed, each
child holds its index and hyperparameters (a tag, written with the child's row, and a property). A
controller started again (``HyperDriveRun.resume()``, ``torchyard sweep resume ID``, or any reader that
finds it gone) takes a lock, so only one runs, and carries on: finished trials are never rerun,
running ones are watched again, and trial *i*'s values are the same as before (they depend only on
the seed and *i*, and for Bayesian sampling on the trials finished before *i*).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import sys
import time
import traceback
from typing import Any

from torchyard.runtime.liveness import reconcile
from torchyard.runtime.submit import spawn_supervisor, submit_run
from torchyard.runtime.sweep_process import _info_path, _lock_path, child_index
from torchyard.status import ACTIVE_VALUES, TERMINAL_VALUES, RunStatus

POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 2.0
USER_CANCEL = "canceled by user"
INDEX_PROP = "torchyard.sweep.index"
HYPER_KEY = "hyperparameters"


def _supervisor_process(run_dir: str) -> bool:
    """Whether a supervisor of the run in ``run_dir`` was spawned and is on its way (it records its pid
    only once started): a crash between the spawn and the record must not start a second one."""
    import psutil  # noqa: PLC0415

    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if run_dir in cmdline and any("torchyard.runtime.supervisor" in part for part in cmdline):
            return True
    return False


class Controller:
    def __init__(self, run_dir: str) -> None:
        from torchyard.sweeps.config import HyperDriveConfig  # noqa: PLC0415
        from torchyard.workspace.workspace import WorkspaceFolder  # noqa: PLC0415

        with open(_info_path(run_dir)) as fh:
            info = json.load(fh)
        self.run_dir = run_dir
        self.run_id: str = info["run_id"]
        self.ws = WorkspaceFolder(info["workspace"], db_url=info["db_url"])
        self.store = self.ws.store
        row = self.store.get_run(self.run_id)
        self.experiment: str = row["experiment"]
        self.definition = json.loads(row["spec"])
        self.config = HyperDriveConfig.from_dict(self.definition)
        self.seed = int(self.definition["sampling"]["seed"])
        self.metric = self.config.primary_metric_name
        self.maximize = self.config.maximize
        self.cancel_reason: str | None = None
        self.stop_reason: str | None = None
        self.histories: dict[str, list[float]] = {}
        self.evaluated: dict[str, int] = {}
        self.judge_from_latest = False
        self.final: set[str] = set()
        self.policy_stopped: dict[str, str] = {}
        self.error: str | None = None
        self.next_beat = 0.0

    # ---- helpers -------------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)

    def _on_sigterm(self, _signum: int, _frame: Any) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = USER_CANCEL

    def _requested_reason(self) -> str:
        return self.store.cancel_reason(self.run_id) or USER_CANCEL

    def _heartbeat(self, now: float) -> None:
        if now < self.next_beat:
            return
        self.next_beat = now + HEARTBEAT_SECONDS
        try:
            status = self.store.heartbeat(self.run_id)
        except Exception as err:  # the store may be briefly unreachable: go on
            self.log(f"heartbeat failed: {err}")
            return
        if status == RunStatus.CANCEL_REQUESTED and self.cancel_reason in (None, USER_CANCEL):
            self.cancel_reason = self._requested_reason()
        elif status in TERMINAL_VALUES and self.cancel_reason is None:
            # ended by someone else (HyperDriveRun.cancel found no controller yet): start nothing more
            self.cancel_reason = f"the sweep ended {status}"
        elif status == RunStatus.NOT_RESPONDING:
            self.store.set_status(self.run_id, RunStatus.RUNNING, "sweep controller heartbeat resumed",
                                  unless=(RunStatus.CANCEL_REQUESTED,))

    def _children(self) -> list[dict[str, Any]]:
        rows = self.store.list_runs(parent_id=self.run_id)
        rows = [reconcile(self.store, r) if r["status"] in ACTIVE_VALUES else r for r in rows]
        return sorted(rows, key=lambda r: child_index(r, self.run_id) or 0)

    def _update_histories(self, children: list[dict[str, Any]]) -> None:
        for row in children:
            cid = row["id"]
            if cid in self.final:
                continue
            series = self.store.get_series(cid, rank=0, name=self.metric).get((0, self.metric))
            self.histories[cid] = list(series[0]) if series else []
            if row["status"] in TERMINAL_VALUES:
                self.final.add(cid)

    def _cancel_children(self, children: list[dict[str, Any]], reason: str) -> int:
        from torchyard.runtime.cancel import cancel_run  # noqa: PLC0415

        active = 0
        for row in children:
            if row["status"] in TERMINAL_VALUES:
                continue
            active += 1
            if row["status"] != RunStatus.CANCEL_REQUESTED:
                cancel_run(self.store, row, reason)
        return active

    # ---- the loop ------------------------------------------------------------------------------------

    def run(self) -> None:
        os.makedirs(os.path.dirname(_lock_path(self.run_dir)), exist_ok=True)
        lock = open(_lock_path(self.run_dir), "a")  # noqa: SIM115 - held for the process's life
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.log("another controller is running this sweep; exiting")
            return
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, self._on_sigterm)
        row = self.store.get_run(self.run_id)
        if row["status"] in TERMINAL_VALUES:
            self.log(f"sweep {self.run_id} already ended {row['status']}")
            return
        self.store.set_supervisor(self.run_id, os.getpid())
        resumed = row["status"] not in (RunStatus.QUEUED, RunStatus.NOT_STARTED)
        self.judge_from_latest = resumed
        if row["status"] == RunStatus.CANCEL_REQUESTED:
            self.cancel_reason = self._requested_reason()
        else:
            self.store.set_status(self.run_id, RunStatus.RUNNING,
                                  "sweep controller resumed" if resumed else "sweep controller started",
                                  unless=(RunStatus.CANCEL_REQUESTED,))
        row = self.store.get_run(self.run_id)
        starts = int(json.loads(row["details"] or "{}").get("controller_starts", 0)) + 1
        self.store.update_details(self.run_id, controller_starts=starts)
        started = row["started_at"] or time.time()
        self.log(f"{'resumed' if resumed else 'started'} sweep {self.run_id}: {self.config!r}")
        deadline = started + self.config.max_duration_minutes * 60
        while True:
            now = time.time()
            self._heartbeat(now)
            children = self._children()
            self._update_histories(children)
            if self.cancel_reason:
                if self._cancel_children(children, f"sweep {self.run_id} was canceled: {self.cancel_reason}") == 0:
                    self._finish(children, RunStatus.CANCELED, self.cancel_reason)
                    return
            else:
                if now > deadline and self.stop_reason is None:
                    self.stop_reason = f"max_duration_minutes={self.config.max_duration_minutes:g} reached"
                    self.log(self.stop_reason)
                if self.stop_reason:
                    if self._cancel_children(children, f"sweep {self.run_id}: {self.stop_reason}") == 0:
                        self._finish(children, None, self.stop_reason)
                        return
                else:
                    self._apply_policy(children)
                    children = self._launch(children)
                    if len(children) >= self.config.max_total_runs and all(
                        r["status"] in TERMINAL_VALUES for r in children
                    ):
                        self._update_histories(children)
                        self._finish(children, None, None)
                        return
            time.sleep(POLL_SECONDS)

    def _apply_policy(self, children: list[dict[str, Any]]) -> None:
        from torchyard.runtime.cancel import cancel_run  # noqa: PLC0415

        policy = self.config.policy
        finished = {r["id"] for r in children if r["status"] in TERMINAL_VALUES}
        if self.judge_from_latest:
            # a resumed controller judges running trials from their latest interval on: the earlier
            # ones were judged by the controller before it, with what was known then
            self.judge_from_latest = False
            for row in children:
                if row["status"] not in TERMINAL_VALUES:
                    self.evaluated[row["id"]] = max(len(self.histories.get(row["id"], [])) - 1, 0)
        for row in children:
            cid = row["id"]
            if row["status"] in TERMINAL_VALUES or row["status"] == RunStatus.CANCEL_REQUESTED:
                continue
            history = self.histories.get(cid, [])
            done = self.evaluated.get(cid, 0)
            for interval in range(done + 1, len(history) + 1):
                self.evaluated[cid] = interval
                reason = policy.evaluate(cid, interval, self.histories, self.maximize, finished)
                if reason:
                    self.log(f"{cid}: {reason}")
                    self.policy_stopped[cid] = reason
                    self.store.update_details(cid, early_terminated={"policy": policy.name, "interval": interval,
                                                                     "reason": reason})
                    cancel_run(self.store, row, reason)
                    break

    def _history_for_sampler(self, children: list[dict[str, Any]]) -> list[tuple[dict[str, Any], float]]:
        out = []
        for row in children:
            values = self.histories.get(row["id"])
            if row["status"] != RunStatus.COMPLETED or not values:
                continue
            params = self._hyperparameters(row)
            if params is not None:
                out.append((params, max(values) if self.maximize else min(values)))
        return out

    def _hyperparameters(self, row: dict[str, Any]) -> dict[str, Any] | None:
        raw = self.store.get_tags(row["id"]).get(HYPER_KEY)
        try:
            return dict(json.loads(raw)) if raw else None
        except ValueError:
            return None

    def _launch(self, children: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from torchyard.sweeps.config import trial_arguments  # noqa: PLC0415

        # a child recorded just before a crash, whose supervisor never started
        for row in children:
            if row["status"] in (RunStatus.NOT_STARTED, RunStatus.QUEUED) \
                    and row.get("supervisor_pid") is None and not _supervisor_process(str(row["run_dir"])):
                self.log(f"{row['id']}: starting its supervisor (recorded before the controller stopped)")
                self.store.set_status(row["id"], RunStatus.QUEUED, "recorded before the sweep controller stopped")
                self.store.set_supervisor(row["id"], spawn_supervisor(str(row["run_dir"])))
            if row["status"] not in TERMINAL_VALUES:
                params = self._hyperparameters(row)
                if params is not None and HYPER_KEY not in self.store.get_properties(row["id"]):
                    self.store.add_properties(row["id"], {HYPER_KEY: json.dumps(params)})
        active = sum(1 for r in children if r["status"] not in TERMINAL_VALUES)
        taken = {child_index(r, self.run_id) for r in children}
        launched = False
        while active < self.config.max_concurrent_runs and len(taken) < self.config.max_total_runs:
            index = min(i for i in range(self.config.max_total_runs + 1) if i not in taken)
            values = self.config.hyperparameter_sampling.suggest(
                index, self.seed, self._history_for_sampler(children), self.maximize
            )
            child_id = f"{self.run_id}_{index}"
            leftover = self.ws.run_dir(child_id)
            if os.path.exists(leftover):  # a folder without a row: a record interrupted by a crash
                shutil.rmtree(leftover, ignore_errors=True)
            spec = trial_arguments(self.config.trial_spec, values)
            hyper = json.dumps(values)
            try:
                submit_run(self.ws, self.experiment, spec, tags={HYPER_KEY: hyper}, parent_id=self.run_id,
                           run_id=child_id)
            except Exception as err:
                self.stop_reason = self.error = f"could not start trial {index}: {err}"
                self.log(self.stop_reason)
                return children
            self.store.add_properties(child_id, {HYPER_KEY: hyper, INDEX_PROP: str(index)})
            self.log(f"{child_id}: started with {hyper}")
            taken.add(index)
            active += 1
            launched = True
        return self._children() if launched else children

    def _stopped_by_policy(self, row: dict[str, Any]) -> bool:
        """Whether the trial ended Canceled by the policy (not one that completed while being stopped)."""
        if row["status"] != RunStatus.CANCELED:
            return False
        try:
            stopped = json.loads(row.get("details") or "{}").get("early_terminated")
        except ValueError:
            stopped = None
        return bool(stopped) or row["id"] in self.policy_stopped

    def _finish(self, children: list[dict[str, Any]], status: RunStatus | None, reason: str | None) -> None:
        from torchyard.sweeps.ranking import best_of  # noqa: PLC0415 - the one tie rule

        entries = []
        for row in children:
            values = self.histories.get(row["id"]) or []
            if values:
                entries.append((max(values) if self.maximize else min(values), row["id"]))
        best = best_of(entries, self.maximize)
        ranked = [best] if best else []
        counts: dict[str, int] = {}
        for row in children:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        summary: dict[str, Any] = {
            "trials": len(children),
            "statuses": counts,
            "early_terminated": sum(1 for row in children if self._stopped_by_policy(row)),
            "best_run_id": ranked[0][1] if ranked else None,
            "best_primary_metric": ranked[0][0] if ranked else None,
        }
        details: dict[str, Any] = {"sweep": summary}
        if status is None and self.error:
            status = RunStatus.FAILED
            details["error"] = {"message": self.error}
        if status is None:
            completed = counts.get(RunStatus.COMPLETED, 0)
            if completed or counts.get(RunStatus.CANCELED, 0) and ranked:
                status = RunStatus.COMPLETED
                if not ranked:
                    reason = reason or f"no trial logged the primary metric {self.metric!r}"
            else:
                status = RunStatus.FAILED
                reason = reason or f"no trial completed ({', '.join(f'{n} {s}' for s, n in counts.items())})"
                details["error"] = {"message": reason}
        self.store.set_status(self.run_id, status, reason, details=details)
        self.log(f"sweep {self.run_id} ended {status.value}" + (f": {reason}" if reason else "") +
                 f"; best {summary['best_run_id']} ({summary['best_primary_metric']})")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    ctl: Controller | None = None
    try:
        ctl = Controller(args[0])
        ctl.run()
        return 0
    except BaseException as err:
        traceback.print_exc()
        if ctl is not None:
            try:
                ctl.store.set_status(ctl.run_id, RunStatus.FAILED, f"sweep controller error: {err}",
                                     details={"error": {"message": f"sweep controller error: {type(err).__name__}: {err}"}})
                ctl._cancel_children(ctl.store.list_runs(parent_id=ctl.run_id),
                                     f"sweep {ctl.run_id} failed: sweep controller error")
            except Exception:
                traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
