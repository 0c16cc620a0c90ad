"""One detached supervisor per run: ``python -m torchyard.runtime.supervisor RUN_DIR``.

It walks the run through Preparing → Starting → Running → Finalizing → Completed/Failed/Canceled,
heart-beats into the store, moves the ranks' journals into the store in batches while the run goes,
enforces ``max_run_duration_seconds``, honours cancel (SIGTERM or a CancelRequested status), and
collects ``outputs/``, ``logs/`` and uploaded files as artifacts.

A supervisor can die (SIGKILL, an upgrade) without its run: on a target that declares REATTACH the
job's processes go on, and the supervisor started in its place (``runtime.liveness``) finds the
job's recorded handle (``internal/handle.json``) and attempt (``internal/attempt.json``), adopts the
job and goes on from the journals' stored offsets: no rank restarted, no value stored twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from typing import Any

from torchyard.compute.base import Handle, JobState, Phase
from torchyard.errors import TorchyardError
from torchyard.launch.plan import PYTHON
from torchyard.paths import RunPaths
from torchyard.runtime.artifacts import collect_artifacts
from torchyard.runtime.checkpoints import persist_checkpoints
from torchyard.runtime.failure import failure_report, hang_report, hang_summary
from torchyard.runtime.ingest import Ingestor
from torchyard.runtime.submit import bootstrap_request, node_placeholders, prepared_job
from torchyard.status import TERMINAL_VALUES, RunStatus

HEARTBEAT_SECONDS = 2.0
USER_CANCEL = "canceled by user"
INGEST_SECONDS = 0.25
#: how often committed checkpoints are linked into the run's artifacts while it runs
CHECKPOINT_SECONDS = 2.0
#: how long a hang waits for the ranks' stacks before the ranks are stopped
STACKS_SECONDS = 6.0
#: how long a store fault (disk full, read-only, the database down) is waited out before the run fails with it
STORE_RETRY_SECONDS = float(os.environ.get("TORCHYARD_STORE_RETRY_SECONDS", "300"))


class _Canceled(Exception):
    pass


class Supervisor:
    def __init__(self, workdir: str, ws: Any = None) -> None:
        self.paths = RunPaths(workdir)
        with open(self.paths.run_info) as fh:
            self.info = json.load(fh)
        from torchyard.spec.job import JobSpec  # noqa: PLC0415
        from torchyard.workspace.workspace import WorkspaceFolder  # noqa: PLC0415

        self.workdir = workdir
        self.run_id: str = self.info["run_id"]
        self.spec = JobSpec.from_json(json.dumps(self.info["spec"]))
        self.ws = ws if ws is not None else WorkspaceFolder(self.info["workspace"], db_url=self.info["db_url"])
        from torchyard.workspace.store import RetryingStore  # noqa: PLC0415

        # a passing store fault (disk full, the database restarting) is waited out, not a reason to fail
        self.store = RetryingStore(self.ws.store, STORE_RETRY_SECONDS)
        self.cancel_reason: str | None = None
        self.fail_reason: str | None = None
        self.fail_stage = ""
        self.error_extra: dict[str, Any] = {}
        self.attempts: list[dict[str, Any]] = []  # the failed attempts before this one (retries)  # more of details["error"] (a hang's stacks and stragglers)
        self.environment: dict[str, Any] = {}
        self._freeze: subprocess.Popen[str] | None = None
        self._freeze_cache = ""
        self.next_beat = 0.0
        self.ingestor = Ingestor(self.ws.store, self.run_id, self.paths.journal,  # backs off on its own
                                 on_alert=self._on_alert)
        self.alerts: list[dict[str, Any]] = []  # what the script said with run.alert()
        self.adopted = False  # this supervisor replaced a dead one
        self.preempting: dict[str, Any] | None = None  # a requeue under way (runtime.cancel)

    # ---- helpers -----------------------------------------------------------------------------------

    def _status(self, status: RunStatus, detail: str | None = None, **kw: Any) -> bool:
        return bool(self.store.set_status(self.run_id, status, detail, unless=(RunStatus.CANCEL_REQUESTED,), **kw))

    def _on_sigterm(self, _signum: int, _frame: Any) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = USER_CANCEL  # the stored reason is read outside the signal handler

    def _user_cancel_reason(self) -> str:
        """The reason given to ``Run.cancel(reason)`` (a sweep policy names itself there)."""
        try:
            return self.store.cancel_reason(self.run_id) or USER_CANCEL
        except Exception:  # the store may be briefly unreachable; the generic reason will do
            return USER_CANCEL

    def _heartbeat(self, now: float) -> None:
        if now < self.next_beat:
            return
        self.next_beat = now + HEARTBEAT_SECONDS
        try:
            status = self.store.heartbeat(self.run_id, os.getpid())
        except Exception as err:  # the store may be briefly unreachable; keep the run going
            print(f"torchyard supervisor: heartbeat failed: {err}", flush=True)
            return
        if status == RunStatus.CANCEL_REQUESTED and self.cancel_reason in (None, USER_CANCEL) and not self.preempting:
            self.cancel_reason = self._user_cancel_reason()
        elif status == RunStatus.NOT_RESPONDING:
            self.store.set_status(self.run_id, RunStatus.RUNNING, "supervisor heartbeat resumed")

    # ---- the lifecycle -----------------------------------------------------------------------------

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, self._on_sigterm)
        # single-threaded on purpose: local launchers are forked from this process
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        self.store.set_supervisor(self.run_id, os.getpid())
        self.next_beat = time.time() + HEARTBEAT_SECONDS
        self._lifecycle()
        self._notify_end()

    def _notify_end(self) -> None:
        """Tell the alert subscribers how the run ended (Failed, Completed, Canceled; ``hung`` as the
        cause of a hang), from a process of its own."""
        from torchyard.runtime.alerts import deliver_detached, run_event  # noqa: PLC0415
        from torchyard.workspace.alerts import AlertRegistry  # noqa: PLC0415

        try:
            if not AlertRegistry(self.ws.path).list():  # nobody listens: no store reads for an event
                return
            row = self.ws.store.get_run(self.run_id)
            if row["status"] not in TERMINAL_VALUES:
                return
            error = json.loads(row["details"] or "{}").get("error") or {}
            message = error.get("message") or (self.store.status_history(self.run_id) or [{}])[-1].get("detail")
            deliver_detached(self.ws.path, run_event(row, str(row["status"]), message, cause=error.get("cause")))
        except Exception as err:  # noqa: BLE001 - an alert is never a reason to fail the run
            print(f"torchyard supervisor: the end's alert was not sent: {err}", flush=True)

    def _on_alert(self, alert: dict[str, Any]) -> None:
        """A ``run.alert()`` from a rank: kept with the run (details["alerts"]) and sent."""
        from torchyard.runtime.alerts import deliver_detached, run_event  # noqa: PLC0415

        self.alerts = [*self.alerts, alert][-100:]
        self.store.update_details(self.run_id, alerts=self.alerts)
        row = self.ws.store.get_run(self.run_id)
        deliver_detached(self.ws.path, run_event(row, "alert", alert.get("text"), title=alert["title"],
                                                 level=alert.get("level"), rank=alert.get("rank")))

    def _lifecycle(self) -> None:
        from torchyard.compute.registry import get_target  # noqa: PLC0415

        if self.store.get_status(self.run_id) == RunStatus.CANCEL_REQUESTED:
            self.cancel_reason = self._user_cancel_reason()
        spec = self.spec
        target = get_target(spec.compute_target, self.ws.path)
        if os.path.exists(self.paths.handle):  # a supervisor before this one started the job
            adopted = self._adopt(target)
            if adopted is not None:
                self._attempts(target, None, None, None, None, *adopted)
                return
        self._status(RunStatus.PREPARING)
        bootstrap = None
        if target.shares_files(self.ws.path):  # the nodes see this machine's files: place here, once
            python = self._prepare_environment()
            if python is None:
                return
            paths = self._prepare_data()
            if paths is None:
                return
        else:  # the node bootstrap builds the environment and places the inputs on every node
            try:
                bootstrap = bootstrap_request(self.ws, spec, target)
            except TorchyardError as err:
                collect_artifacts(self.ws, self.store, self.run_id, self.paths)
                self.store.set_status(self.run_id, RunStatus.FAILED, str(err),
                                      details={"error": {"message": str(err), "stage": "Preparing"}})
                return
            python, paths = PYTHON, node_placeholders(spec)
            from torchyard.environments import environment_key  # noqa: PLC0415

            key = environment_key(spec.environment) if bootstrap["environment"] else None
            self.environment = {"placed_on": "nodes", "key": key}
            self.store.update_details(self.run_id, environment=self.environment)
        report_url = None
        if target.reports_over_http():
            try:
                report_url = self._run_token(target.name, bootstrap)
            except TorchyardError as err:
                self.fail_reason, self.fail_stage = str(err), "Preparing"
                self._finish(None)
                return
        if self.cancel_reason:
            self._finish(None)
            return
        self._attempts(target, python, paths, bootstrap, report_url, 0, None, None, 0.0)

    def _adopt(self, target: Any) -> tuple[int, str | None, Handle, float] | None:
        """The job a dead supervisor started, when the target finds it again: (attempt, the
        checkpoint it resumed from, its handle, when it started); None when there is none to adopt."""
        from torchyard.compute.base import Feature  # noqa: PLC0415

        if Feature.REATTACH not in target.features:
            return None
        try:
            with open(self.paths.handle) as fh:
                state = json.load(fh)
            handle = target.reattach(state)
        except (OSError, ValueError, TorchyardError) as err:
            print(f"torchyard supervisor: the job of the supervisor before could not be found: {err}", flush=True)
            return None
        if handle is None:
            return None
        try:
            with open(self.paths.attempt) as fh:
                attempt = json.load(fh)
        except (OSError, ValueError):
            attempt = {}
        row = self.ws.store.get_run(self.run_id)
        details = json.loads(row["details"] or "{}")
        self.attempts = list(details.get("attempts") or [])
        self.alerts = list(details.get("alerts") or [])
        self.environment = dict(attempt.get("environment") or {})
        self.adopted = True
        replaced = [*details.get("supervisors", []), {"time": time.time(), "pid": os.getpid(),
                                                      "replaced": attempt.get("supervisor")}]
        self.store.update_details(self.run_id, supervisors=replaced)
        number, resume_from, started = int(attempt.get("attempt", 0)), attempt.get("resume_from") or None, \
            float(attempt.get("started") or time.time())
        if number > 0:
            self.ingestor.begin_attempt(attempt.get("journal_start") or {})
        self._record_attempt(number, resume_from, started)  # with this process as its supervisor
        print(f"torchyard supervisor: adopted the job of supervisor {attempt.get('supervisor')}, which is gone "
              f"(attempt {int(attempt.get('attempt', 0))})", flush=True)
        return number, resume_from, handle, started

    def _record_attempt(self, attempt: int, resume_from: str | None, started: float) -> None:
        """What a supervisor replacing this one needs to go on with the attempt (``internal/attempt.json``)."""
        tmp = f"{self.paths.attempt}.tmp"
        try:
            with open(tmp, "w") as fh:
                json.dump({"attempt": attempt, "resume_from": resume_from, "started": started,
                           "environment": self.environment, "supervisor": os.getpid(),
                           "journal_start": self.ingestor.attempt_start}, fh)
            os.replace(tmp, self.paths.attempt)
        except OSError as err:
            print(f"torchyard supervisor: could not record the attempt: {err}", flush=True)

    def _attempts(self, target: Any, python: str | None, paths: dict[tuple[str, str], str] | None,
                  bootstrap: dict[str, Any] | None, report_url: str | None, attempt: int, resume_from: str | None,
                  adopted: Handle | None, adopted_started: float) -> None:
        """The job's attempts, to the run's end: each scheduled (or, first, ``adopted``), watched,
        and retried while its failure's cause is retried."""
        spec = self.spec
        try:
            while True:
                if adopted is not None:
                    handle, started, adopted = adopted, adopted_started, None
                else:
                    if python is None:  # a retry after an adoption: the environment and inputs again
                        python = self._prepare_environment()
                        paths = self._prepare_data() if python is not None else None
                        if python is None or paths is None:
                            return
                    assert paths is not None
                    job = prepared_job(self.run_id, self.info["experiment"], self.info["workspace"], self.workdir,
                                       _attempt_spec(spec, attempt, resume_from), python, paths, bootstrap, report_url)
                    self.spec = job.spec
                    plan = target.dryrun(job)
                    self._status(RunStatus.STARTING)
                    started = time.time()
                    if attempt > 0:  # its values for steps the lost attempt logged replace those
                        self.ingestor.begin_attempt(self.ingestor.journal_sizes())
                    self._record_attempt(attempt, resume_from, started)
                    try:
                        handle = target.schedule(plan)
                    except TorchyardError as err:
                        self.fail_reason = f"compute target {target.name!r} could not start the job: {err}"
                        self.fail_stage = "Starting"
                        self._finish(None)
                        return
                self._record_compute(handle)
                try:
                    rc, nodes = self._watch(handle)
                    retry = self._retry(attempt, started, rc, nodes, resume_from)
                    if retry is None:
                        if self.attempts:  # the last attempt, whose end is the run's
                            self.attempts.append({"attempt": attempt, "started": started, "ended": time.time(),
                                                  "cause": None, "resumed_from": resume_from or None, "exit_code": rc})
                            self.store.update_details(self.run_id, attempts=self.attempts)
                        self._finish(rc, nodes)  # before the release, which may take a while (a dead node's actors)
                        return
                finally:
                    handle.release()
                if not self._backoff(attempt):
                    self._finish(None)
                    return
                attempt, resume_from = attempt + 1, retry
        finally:
            if report_url:
                from torchyard.workspace.access import AccessStore  # noqa: PLC0415

                AccessStore(self.store.engine).revoke_run_tokens(self.run_id)

    def _preempt_other(self, run_id: str) -> None:
        """Preempt run ``run_id`` so this one can start (the target chose it: preemptible, a lower
        priority); it checkpoints in its grace and resumes later."""
        from torchyard.runtime.cancel import cancel_run  # noqa: PLC0415

        why = f"preempted by run {self.run_id} (priority {self.spec.priority})"
        try:
            cancel_run(self.ws.store, self.ws.store.get_run(run_id), why, requeue=True)
            print(f"torchyard supervisor: {run_id} {why}", flush=True)
        except Exception as err:  # noqa: BLE001  (it ended meanwhile, or the store blinked: its GPUs come back anyway)
            print(f"torchyard supervisor: could not preempt {run_id}: {err}", flush=True)

    def _requeue_requested(self) -> dict[str, Any] | None:
        """The preemption asked of the run (``details["requeue"]``, runtime.cancel), if any."""
        try:
            row = self.store.get_run(self.run_id)
            requeue = json.loads(row["details"] or "{}").get("requeue")
        except Exception:  # noqa: BLE001  (the store briefly unreachable: a plain cancel then)
            return None
        return requeue if isinstance(requeue, dict) else None

    def _preempt(self, requeue: dict[str, Any]) -> None:
        """Start a preemption: the flag the ranks read (``run.preempted``) and the launchers' longer
        grace; the cancel is not the run's end."""
        self.preempting = requeue
        self.cancel_reason = None
        try:
            with open(self.paths.preempted, "w") as fh:
                json.dump({"time": time.time(), "grace": self.spec.preempt_grace_seconds,
                           "reason": requeue.get("reason")}, fh)
        except OSError as err:
            print(f"torchyard supervisor: could not flag the preemption to the ranks: {err}", flush=True)
        print(f"torchyard supervisor: preempted ({requeue.get('reason')}); the ranks have "
              f"{self.spec.preempt_grace_seconds:g} s to checkpoint", flush=True)

    def _retry(self, attempt: int, started: float, rc: int | None, nodes: list[dict[str, Any]],
               resume_from: str | None) -> str | None:
        """After an attempt ended: when it failed for a cause the job retries (``retry_on``) and
        attempts are left (``max_retries``), record it, set the run Retrying, put the attempt's logs
        aside and wait a backoff; the checkpoint the next attempt resumes from ("" for none). None:
        no retry (the attempt's end is the run's)."""
        spec = self.spec
        if self.preempting is not None and not self.cancel_reason and self.fail_reason is None:
            return self._requeue(attempt, started, rc, resume_from)
        spent = sum(1 for a in self.attempts if a.get("cause") != "preempted")  # a preemption spends no retry
        if self.cancel_reason or spec.max_retries <= spent:
            return None
        if self.fail_reason is not None:
            cause = {"hang": "hung", "compute": "infrastructure"}.get(self.fail_stage)
            message = self.fail_reason
            node = None
        elif rc not in (0, None):
            error = failure_report(self.paths, rc, nodes, spec.distribution.process_count_per_node)
            cause, message, node = error.get("cause"), error["message"], error.get("node_rank")
        else:
            return None
        if cause is None or not ("any" in spec.retry_on or cause in spec.retry_on):
            return None
        from torchyard.tracking.checkpoint import committed  # noqa: PLC0415

        found = committed(self.paths.checkpoints)
        resume = str(found[-1][1]) if found else ""
        record = {"attempt": attempt, "started": started, "ended": time.time(), "cause": cause, "message": message,
                  "node": node, "resumed_from": resume_from or None, "exit_code": rc}
        self.attempts.append(record)
        wait = min(2.0 ** attempt, 30.0)
        self.store.update_details(self.run_id, attempts=self.attempts)
        self.store.set_status(self.run_id, RunStatus.RETRYING,
                              f"attempt {attempt + 1} of {spec.max_retries + 1} failed ({cause}): {message}; the next "
                              f"starts in {wait:g} s" + (f" from {os.path.basename(resume)}" if resume else ""))
        print(f"torchyard supervisor: attempt {attempt} failed ({cause}): {message}; retrying", flush=True)
        try:
            from torchyard.runtime.alerts import deliver_detached, run_event  # noqa: PLC0415

            deliver_detached(self.ws.path, run_event(self.ws.store.get_run(self.run_id), "Retrying", message,
                                                     cause=cause, attempt=attempt))
        except Exception as err:  # noqa: BLE001 - an alert is never a reason to fail the run
            print(f"torchyard supervisor: the retry's alert was not sent: {err}", flush=True)
        self._set_attempt_aside(attempt)
        self.fail_reason, self.fail_stage, self.error_extra = None, "", {}
        return resume

    def _requeue(self, attempt: int, started: float, rc: int | None, resume_from: str | None) -> str:
        """A preempted attempt ended: record it (cause ``preempted``; retries are not spent), set the
        run Retrying and resume from the latest committed checkpoint."""
        from torchyard.tracking.checkpoint import committed  # noqa: PLC0415

        found = committed(self.paths.checkpoints)
        resume = str(found[-1][1]) if found else ""
        reason = str((self.preempting or {}).get("reason") or "preempted")
        self.attempts.append({"attempt": attempt, "started": started, "ended": time.time(), "cause": "preempted",
                              "message": reason, "node": None, "resumed_from": resume_from or None, "exit_code": rc})
        self.store.update_details(self.run_id, attempts=self.attempts, requeue=None)
        self.store.set_status(self.run_id, RunStatus.RETRYING,
                              f"attempt {attempt + 1} was preempted ({reason}); the next starts"
                              + (f" from {os.path.basename(resume)}" if resume else " from the beginning (no checkpoint)"))
        print(f"torchyard supervisor: attempt {attempt} preempted; requeued", flush=True)
        self._set_attempt_aside(attempt)
        self.preempting = None
        return resume

    def _backoff(self, attempt: int) -> bool:
        """Wait before attempt ``attempt + 1`` (1 s, 2 s, 4 s... at most 30 s), heart-beating; False
        when the run was canceled meanwhile."""
        deadline = time.time() + min(2.0 ** attempt, 30.0)
        while time.time() < deadline and not self.cancel_reason:
            self._heartbeat(time.time())
            time.sleep(min(0.5, max(0.0, deadline - time.time())))
        return not self.cancel_reason

    def _set_attempt_aside(self, attempt: int) -> None:
        """The failed attempt's rank logs and node reports move to ``logs/attempt_N/``, so the next
        attempt's are its own (the journals go on: the metrics are one series across attempts)."""
        import shutil  # noqa: PLC0415

        aside = os.path.join(self.paths.logs, f"attempt_{attempt}")
        os.makedirs(aside, exist_ok=True)
        for folder, keep in ((self.paths.logs, lambda n: n.startswith(("rank_", "stacks_", "torchrun_node_"))),
                             (self.paths.internal, lambda n: n.startswith("launcher_node_") and n.endswith(".json"))):
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in names:
                if keep(name) and os.path.isfile(os.path.join(folder, name)):
                    shutil.move(os.path.join(folder, name), os.path.join(aside, name))
        for stale in (self.paths.stacks_request, os.path.join(self.paths.internal, "exit"), self.paths.handle,
                      self.paths.preempted):
            if os.path.isdir(stale):
                shutil.rmtree(stale, ignore_errors=True)
            elif os.path.exists(stale):
                os.unlink(stale)

    def _run_token(self, target: str, bootstrap: dict[str, Any] | None) -> str:
        """For a target whose nodes report to the team server: a token scoped to this run, made for
        the user who submitted it, put in this process's environment (what it starts inherits it;
        targets forward it like credentials: ``forward_env``), never in a file. The server's URL."""
        from torchyard.errors import ComputeError  # noqa: PLC0415
        from torchyard.workspace.access import AccessStore  # noqa: PLC0415

        url = os.environ.get("TORCHYARD_REPORT_URL")
        user = self.store.get_run(self.run_id).get("created_by")
        if not url or not user:
            raise ComputeError(f"compute target {target!r}: its nodes report to a team server, so runs on it must be "
                               "submitted through `torchyard server` (Workspace(url=...), TORCHYARD_SERVER)")
        limit = self.spec.max_run_duration_seconds
        _id, token = AccessStore(self.store.engine).create_token(
            user, scope="write", kind="run", run_id=self.run_id, expires_in=(limit + 3600) if limit else 7 * 86400,
            description=f"the nodes of run {self.run_id} (made by its supervisor)")
        os.environ["TORCHYARD_RUN_TOKEN"] = token
        if bootstrap is not None:
            bootstrap["forward_env"] = sorted({*bootstrap.get("forward_env", ()), "TORCHYARD_RUN_TOKEN"})
        return url

    def _watch(self, handle: Handle) -> tuple[int | None, list[dict[str, Any]]]:
        """Follow a submitted job to its end: queue wait, limits, hangs, cancel, ingest; its exit code
        and its nodes' reports."""
        spec = self.spec
        queued_since = time.time()
        queue_reason: str | None = None
        started: float | None = None
        limit = spec.max_run_duration_seconds
        hang = spec.hang_timeout_seconds
        next_hang_check = 0.0
        next_ingest = 0.0
        next_checkpoints = 0.0
        canceling = False
        state = JobState(Phase.QUEUED)
        while True:
            state = handle.describe()
            now = time.time()
            if state.phase is Phase.ENDED:
                break
            if started is None:
                reason = state.queue_reason
                if state.phase is Phase.RUNNING:
                    started = now
                    self._status(RunStatus.RUNNING)
                    self._start_freeze()
                elif reason is not None and reason != queue_reason:
                    queue_reason = reason
                    self._status(RunStatus.QUEUED, reason)
                    self.store.update_details(self.run_id, queue_reason=reason)
                for victim in handle.preemptions():
                    self._preempt_other(victim)
                if (
                    state.phase is Phase.QUEUED
                    and spec.max_queue_seconds is not None
                    and now - queued_since > spec.max_queue_seconds
                    and self.fail_reason is None
                ):
                    self.fail_stage = "Queued"
                    self.fail_reason = (
                        f"gave up after {now - queued_since:.0f} s in the queue "
                        f"(max_queue_seconds={spec.max_queue_seconds:g}): {reason}"
                    )
                    handle.cancel()
            if now >= next_ingest:
                handle.sync()
                self.ingestor.ingest()
                next_ingest = now + INGEST_SECONDS
                if now >= next_checkpoints:
                    next_checkpoints = now + CHECKPOINT_SECONDS
                    self._persist_checkpoints()
            if started is not None:
                if limit is not None and now - started > limit and self.cancel_reason is None:
                    self.cancel_reason = f"exceeded max_run_duration_seconds={limit:g}"
                if hang is not None and now >= next_hang_check and self.fail_reason is None:
                    next_hang_check = now + 1.0
                    quiet = now - max(started, self._last_activity())
                    if quiet > hang:
                        self.fail_stage = "hang"
                        report = self._hang_stacks(handle)
                        self.error_extra = {"cause": "hung", **report}
                        self.fail_reason = (
                            f"no rank wrote output or metrics for {quiet:.0f} s (hang_timeout_seconds={hang:g}): "
                            f"a hung collective or a stuck rank; {hang_summary(report)}; every rank was stopped"
                        )
                        handle.cancel()
            if self.cancel_reason and not canceling:
                canceling = True
                if self.cancel_reason == USER_CANCEL:
                    self.cancel_reason = self._user_cancel_reason()
                requeue = self._requeue_requested()
                if requeue is not None:  # preempted: the ranks checkpoint in their grace, the run resumes
                    self._preempt(requeue)
                else:
                    self.store.set_status(self.run_id, RunStatus.CANCEL_REQUESTED, self.cancel_reason)
                handle.cancel()
            self._heartbeat(now)
            # sleep until the job moves on (a target that can say), a launcher exits (SIGCHLD) or the next ingest is due
            tick = max(0.001, min(next_ingest, self.next_beat) - time.time())
            if not handle.wait(tick):
                signal.sigtimedwait({signal.SIGCHLD}, tick)
        rc = state.exit_code
        handle.sync()
        fault = self.ingestor.drain(STORE_RETRY_SECONDS)
        if fault is not None and self.fail_reason is None:
            self.fail_stage = "Finalizing"
            self.fail_reason = (f"not every logged metric value could be stored: {fault}. They are kept in the run's "
                                f"journals; `torchyard runs repair {self.run_id}` stores them once the store works")
        if state.verdict is not None and not self.cancel_reason and not self.fail_reason:
            if state.verdict is RunStatus.CANCELED:
                self.cancel_reason = state.reason
            else:
                self.fail_reason, self.fail_stage = state.reason, "compute"
        if started is None and self.fail_reason is None and self.cancel_reason is None:
            self._status(RunStatus.RUNNING)  # it ran, faster than the first look
            self._start_freeze()
        self._record_compute(handle)
        try:
            handle.collect()
        except Exception as err:  # the outputs are lost, the rest of the run is not
            print(f"torchyard supervisor: could not collect the nodes' outputs: {err}", flush=True)
            self.store.update_details(self.run_id, collect_error=str(err))
        self.ingestor.drain(STORE_RETRY_SECONDS)  # what the last collect brought back, if anything
        return rc, handle.node_statuses()

    def _persist_checkpoints(self) -> None:
        """Committed checkpoints → the run's artifacts (``checkpoints/step_N``); never fails the run."""
        try:
            persist_checkpoints(self.ws, self.run_id, self.paths)
        except Exception as err:  # noqa: BLE001  (a copy; the node's checkpoints are still there)
            print(f"torchyard supervisor: could not keep the checkpoints: {err}", flush=True)

    def _hang_stacks(self, handle: Handle) -> dict[str, Any]:
        """Before a hung job is stopped: ask every launcher for its ranks' Python stacks (the launcher
        signals each rank, whose faulthandler writes them), wait for them in ``logs/``, and
        say which ranks are stragglers (torchyard.runtime.failure.hang_report)."""
        world = self.spec.distribution.node_count * self.spec.distribution.process_count_per_node
        launchers = [k for k in range(self.spec.distribution.node_count) if os.path.exists(self.paths.plan(k))]
        try:
            os.makedirs(self.paths.stacks, exist_ok=True)
            with open(self.paths.stacks_request, "w") as fh:
                fh.write(str(time.time()))
        except OSError as err:
            print(f"torchyard supervisor: could not ask for the ranks' stacks: {err}", flush=True)
        deadline = time.time() + STACKS_SECONDS
        while time.time() < deadline:
            handle.sync()
            if all(os.path.exists(self.paths.stacks_log(r)) for r in range(world)):
                break
            if launchers and all(os.path.exists(self.paths.stacks_done(k)) for k in launchers):
                break
            if handle.poll() is not None:
                break
            time.sleep(0.1)
        report = hang_report(self.paths, world)
        print(f"torchyard supervisor: hang: {hang_summary(report)}", flush=True)
        return report

    def _record_compute(self, handle: Handle) -> None:
        """What the target says of the job (its Slurm job id, its Ray nodes) → details["compute"]; and
        what a replacing supervisor finds the job by (``internal/handle.json``), where the target can."""
        try:
            if compute := handle.details():
                self.store.update_details(self.run_id, compute=compute)
        except Exception as err:  # noqa: BLE001  (a record, never a reason to lose the run)
            print(f"torchyard supervisor: no compute details: {err}", flush=True)
        state = handle.reattach_state()
        if state is not None and state.get("kind") and not os.path.exists(self.paths.handle):
            try:
                with open(f"{self.paths.handle}.tmp", "w") as fh:
                    json.dump(state, fh)
                os.replace(f"{self.paths.handle}.tmp", self.paths.handle)
            except OSError as err:
                print(f"torchyard supervisor: could not record how to find the job again: {err}", flush=True)

    def _prepare_environment(self) -> str | None:
        """The interpreter the ranks use; builds the environment if need be. None: the run ended."""
        from torchyard.environments import EnvironmentBuildError, resolve  # noqa: PLC0415

        env = self.spec.environment
        if env.is_default or env.user_managed:
            self.environment = {"python": self.info["python"], "key": None, "cached": True}
            return str(self.info["python"])

        def tick() -> None:
            self._heartbeat(time.time())
            if self.cancel_reason:
                raise _Canceled

        log = self.paths.log("environment.txt")
        try:
            resolved = resolve(self.info["workspace"], env, log, tick)
        except _Canceled:
            self._finish(None)
            return None
        except EnvironmentBuildError as err:
            message = f"environment build failed: {err}"
            collect_artifacts(self.ws, self.store, self.run_id, self.paths)
            self.store.set_status(self.run_id, RunStatus.FAILED, message.splitlines()[0],
                                  details={"error": {"message": message, "stage": "Preparing"}})
            return None
        self.environment = {"python": resolved.python, "key": resolved.key, "cached": resolved.cached}
        self.store.update_details(self.run_id, environment=self.environment)  # marks the cache entry in use
        return resolved.python

    def _prepare_data(self) -> dict[tuple[str, str], str] | None:
        """Make every input a local path and create every named output's folder.
        Returns {("inputs"|"outputs", name): path}; None when an input failed (the run is Failed)."""
        spec = self.spec
        paths: dict[tuple[str, str], str] = {}
        if not spec.inputs and not spec.outputs:
            return paths
        from torchyard.data.transfer import DataError, resolve_input  # noqa: PLC0415

        os.makedirs(self.paths.logs, exist_ok=True)
        results: dict[str, Any] = {}
        with open(self.paths.log("inputs.txt"), "a") as log:
            for name, ref in spec.inputs.items():
                dest = self.paths.input(ref.get("path_on_compute") or name)
                try:
                    result = resolve_input(self.info["workspace"], _ref_only(ref), dest, log)
                except DataError as err:
                    message = f"input {name!r}: {err}"
                    collect_artifacts(self.ws, self.store, self.run_id, self.paths)
                    self.store.set_status(self.run_id, RunStatus.FAILED, message,
                                          details={"error": {"message": message, "stage": "Preparing"}, "inputs": results})
                    return None
                results[name] = result
                paths[("inputs", name)] = result["path"]
        for name in spec.outputs:
            folder = self.paths.named_output(name)
            os.makedirs(folder, exist_ok=True)
            paths[("outputs", name)] = folder
        self.store.update_details(self.run_id, inputs=results)
        return paths

    def _upload_outputs(self) -> str | None:
        """Upload named outputs; returns an error message, or None when all went up."""
        if not self.spec.outputs:
            return None
        from torchyard.data.transfer import DataError, upload_output  # noqa: PLC0415

        results: dict[str, Any] = {}
        error = None
        with open(self.paths.log("outputs.txt"), "a") as log:
            for name, ref in self.spec.outputs.items():
                src = self.paths.named_output(name)
                try:
                    results[name] = upload_output(self.info["workspace"], _ref_only(ref), src, self.run_id, log)
                except DataError as err:
                    error = f"output {name!r}: {err}"
                    break
        self.store.update_details(self.run_id, outputs=results)
        return error

    def _start_freeze(self) -> None:
        """List the environment's exact packages in the background while the ranks run."""
        from torchyard.environments import freeze_argv, freeze_cache_path  # noqa: PLC0415

        if "python" not in self.environment:  # built on the nodes: its packages are listed there
            return
        self._freeze_cache = freeze_cache_path(self.info["workspace"], self.environment["python"])
        if os.path.exists(self._freeze_cache):
            return
        try:
            self._freeze = subprocess.Popen(
                freeze_argv(self.environment["python"]), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
        except (OSError, TorchyardError):  # no uv: the run goes on, without its package list
            self._freeze = None

    def _environment_details(self) -> dict[str, Any]:
        if not self.environment or "python" not in self.environment:
            return {"environment": self.environment} if self.environment else {}
        env = dict(self.environment, base_python=self.info["python"], packages=[])
        if self._freeze is not None:
            try:
                out, _ = self._freeze.communicate(timeout=30)
                from torchyard.environments import plain_packages  # noqa: PLC0415

                env["packages"] = plain_packages([line for line in out.splitlines() if line and not line.startswith("#")])
                if self._freeze.returncode == 0:
                    os.makedirs(os.path.dirname(self._freeze_cache), exist_ok=True)
                    tmp = f"{self._freeze_cache}.{os.getpid()}"
                    with open(tmp, "w") as fh:
                        json.dump(env["packages"], fh)
                    os.replace(tmp, self._freeze_cache)
            except subprocess.TimeoutExpired:
                self._freeze.kill()
                self._freeze.communicate()
        elif self._freeze_cache:
            try:
                from torchyard.environments import plain_packages  # noqa: PLC0415

                with open(self._freeze_cache) as fh:
                    env["packages"] = plain_packages(json.load(fh))
            except (OSError, ValueError):
                pass
        return {"environment": env}

    def _last_activity(self) -> float:
        """The newest write to any rank's log or journal."""
        latest = 0.0
        for folder in (self.paths.logs, self.paths.journal):
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        latest = max(latest, entry.stat().st_mtime)
            except OSError:
                continue
        return latest

    def _finish(self, rc: int | None, nodes: list[dict[str, Any]] | None = None) -> None:
        env = self._environment_details()
        self._persist_checkpoints()
        if self.fail_reason and not self.cancel_reason:
            collect_artifacts(self.ws, self.store, self.run_id, self.paths)
            self.store.set_status(
                self.run_id,
                RunStatus.FAILED,
                self.fail_reason,
                details={"error": {"message": self.fail_reason, "stage": self.fail_stage, "hang": self.fail_stage == "hang",
                                   **self.error_extra}, **env},
                exit_code=rc,
            )
            return
        if self.cancel_reason:
            if self.cancel_reason == USER_CANCEL:
                self.cancel_reason = self._user_cancel_reason()
            collect_artifacts(self.ws, self.store, self.run_id, self.paths)
            self.store.set_status(
                self.run_id,
                RunStatus.CANCELED,
                self.cancel_reason,
                details={"cancel_reason": self.cancel_reason, **env},
                exit_code=rc,
            )
            return
        self._status(RunStatus.FINALIZING)
        collect_artifacts(self.ws, self.store, self.run_id, self.paths)
        if rc == 0 and (upload_error := self._upload_outputs()):
            self.store.set_status(self.run_id, RunStatus.FAILED, upload_error,
                                  details={"error": {"message": upload_error, "stage": "Finalizing"}, **env}, exit_code=0)
            return
        if rc == 0:
            from torchyard.runtime.returned import missing  # noqa: PLC0415

            dist = self.spec.distribution
            warnings = missing(self.paths, nodes or [], dist.node_count, every_node_reports=dist.backend != "mpi")
            for line in warnings:
                print(f"torchyard supervisor: warning: {line}", flush=True)
            self.store.set_status(self.run_id, RunStatus.COMPLETED, "; ".join(warnings) or None, exit_code=0,
                                  details={**env, "warnings": warnings} if warnings else env)
            return
        error = failure_report(self.paths, rc, nodes or [], self.spec.distribution.process_count_per_node)
        self.store.set_status(
            self.run_id,
            RunStatus.FAILED,
            error["message"],
            details={"error": error, **env},
            exit_code=error.get("exit_code", rc),
        )

def _attempt_spec(spec: Any, attempt: int, resume_from: str | None) -> Any:
    """The job of attempt ``attempt``: TORCHYARD_ATTEMPT and, with a checkpoint, TORCHYARD_RESUME_FROM
    in every rank's environment (the env contract's names; launch.contract)."""
    if attempt == 0:
        return spec
    extra = {"TORCHYARD_ATTEMPT": str(attempt)}
    if resume_from:
        extra["TORCHYARD_RESUME_FROM"] = resume_from
    import msgspec  # noqa: PLC0415

    return msgspec.structs.replace(spec, environment_variables={**spec.environment_variables, **extra})


def _ref_only(ref: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ref.items() if k not in ("type", "description")}


def _run_lock(workdir: str) -> int | None:
    """An exclusive lock on the run (held until this process and its forks are gone); None if taken."""
    import fcntl  # noqa: PLC0415

    path = RunPaths(workdir).supervisor_lock
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def supervise(workdir: str, ws: Any = None) -> bool:
    """Run the supervisor of the run in ``workdir`` to its end; any error of its own fails the run.

    One supervisor per run: a second one (a sweep controller resuming a trial whose supervisor had
    just started, say) finds the run's lock taken and leaves at once."""
    lock = _run_lock(workdir)
    if lock is None:
        print(f"torchyard supervisor: {workdir} already has a supervisor; leaving it alone", flush=True)
        return True
    from torchyard.launch.launcher import CLOSE_IN_FORKS  # noqa: PLC0415

    CLOSE_IN_FORKS.add(lock)  # launchers that outlive this process must not keep its lock
    sup: Supervisor | None = None
    try:
        sup = Supervisor(workdir, ws)
        sup.run()
        return True
    except BaseException as err:
        traceback.print_exc()
        if sup is not None:
            try:
                sup.store.set_status(
                    sup.run_id,
                    RunStatus.FAILED,
                    f"supervisor error: {err}",
                    details={"error": {"message": f"torchyard supervisor error: {type(err).__name__}: {err}"}},
                )
            except Exception:
                traceback.print_exc()
                _leave_cause(workdir, err)
        return False


def _leave_cause(workdir: str, err: BaseException) -> None:
    """The store cannot take the run's end: leave its cause in the run folder, where the reader that
    finds this supervisor gone reads it (runtime.liveness), instead of "supervisor process N is gone"."""
    try:
        with open(RunPaths(workdir).supervisor_error, "w") as fh:
            fh.write(f"{type(err).__name__}: {err}" if not isinstance(err, TorchyardError) else str(err))
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return 0 if supervise(args[0]) else 1


if __name__ == "__main__":
    sys.exit(main())
