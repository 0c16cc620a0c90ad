"""HyperDriveRun: the parent run of a sweep, as Azure ML's ``HyperDriveRun``."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any, TextIO

from torchyard.errors import NotFoundError
from torchyard.run import Run
from torchyard.status import TERMINAL_VALUES, RunKind, RunStatus


class HyperDriveRun(Run):
    """A sweep's parent run; its children are ordinary runs (``<parent>_<i>``).

    ``HyperDriveRun(experiment, run_id)`` opens an existing sweep; ``exp.submit(HyperDriveConfig(...))``
    starts one. Everything ``Run`` offers works on the parent (status, details, wait_for_completion,
    cancel); the methods below look at the trials. On a team server's workspace it is a
    :class:`torchyard.remote.run.RemoteSweepRun` (the same methods, answered by the server)."""

    _sweep_parent = True  # Run.__new__: a remote workspace's sweep is a RemoteSweepRun

    def __init__(self, experiment: Any, run_id: str, *, _row: dict[str, Any] | None = None) -> None:
        super().__init__(experiment, run_id, _row=_row)
        try:
            definition = json.loads(self._row["spec"] or "{}")
        except ValueError:
            definition = {}
        if self._row.get("kind") != RunKind.SWEEP:
            raise NotFoundError(f"run {run_id!r} is not a sweep (HyperDrive) run", run_id=run_id)
        self._definition: dict[str, Any] = definition

    # ---- the sweep's definition ----------------------------------------------------------------------

    @property
    def primary_metric_name(self) -> str:
        """The metric the sweep ranks its trials by."""
        return str(self._definition["primary_metric_name"])

    @property
    def maximize(self) -> bool:
        """Whether a higher primary metric is better."""
        return self._definition["primary_metric_goal"] == "MAXIMIZE"

    @property
    def hyperdrive_config(self) -> Any:
        """The sweep's HyperDriveConfig, rebuilt from the store."""
        from torchyard.sweeps.config import HyperDriveConfig  # noqa: PLC0415

        return HyperDriveConfig.from_dict(self._definition)

    def get_primary_metric_config(self) -> dict[str, str]:
        """Azure's shape: ``{"name": METRIC, "goal": "MAXIMIZE" | "MINIMIZE"}``."""
        return {"name": self.primary_metric_name, "goal": self._definition["primary_metric_goal"]}

    # ---- trials -----------------------------------------------------------------------------------------

    def _child_rows(self) -> list[dict[str, Any]]:
        from torchyard.runtime.sweep_process import child_index  # noqa: PLC0415

        rows = self._store.list_runs(parent_id=self.id)
        return sorted(rows, key=lambda r: child_index(r, self.id) or 0)

    def get_children(self) -> list[Run]:
        """The trials, in the order they were started."""
        return [Run(self.experiment, r["id"], _row=r) for r in self._child_rows()]

    def get_hyperparameters(self) -> dict[str, dict[str, Any]]:
        """``{child run id: {parameter: value}}`` for every trial."""
        out = {}
        for row in self._child_rows():
            raw = self._store.get_tags(row["id"]).get("hyperparameters")
            out[row["id"]] = json.loads(raw) if raw else {}
        return out

    def get_metrics(self, name: str | None = None, rank: int | str | None = 0) -> dict[Any, Any]:
        """``{child run id: that run's metrics}`` for every trial (Azure's HyperDriveRun.get_metrics)."""
        return {child.id: child.get_metrics(name, rank) for child in self.get_children()}

    def _best_values(self) -> list[dict[str, Any]]:
        from torchyard.runtime.liveness import reconcile  # noqa: PLC0415

        hyper = self.get_hyperparameters()
        out = []
        for row in self._child_rows():
            row = reconcile(self._store, row) if row["status"] not in TERMINAL_VALUES else row
            series = self._store.get_series(row["id"], rank=0, name=self.primary_metric_name).get(
                (0, self.primary_metric_name)
            )
            values = series[0] if series else []
            best = (max(values) if self.maximize else min(values)) if values else None
            out.append({
                "run_id": row["id"],
                "hyperparameters": hyper.get(row["id"], {}),
                "best_primary_metric": best,
                "status": row["status"],
                "intervals": len(values),
            })
        return out

    def get_children_sorted_by_primary_metric(
        self, top: int = 0, reverse: bool = False, discard_no_metric: bool = False
    ) -> list[dict[str, Any]]:
        """The trials best first (ties: the trial started first; see :mod:`torchyard.sweeps.ranking`), as dicts with ``run_id``, ``hyperparameters``, ``best_primary_metric``
        (the best value the trial logged), ``status`` and ``intervals`` (values logged); trials without
        the metric come last (or not at all with ``discard_no_metric``). ``top``: only the first N
        (0: all); ``reverse``: worst first."""
        from torchyard.sweeps.ranking import rank  # noqa: PLC0415

        ranked = rank(self._best_values(), value=lambda r: r["best_primary_metric"], run_id=lambda r: r["run_id"],
                      maximize=self.maximize)
        if discard_no_metric:
            ranked = [r for r in ranked if r["best_primary_metric"] is not None]
        if reverse:
            ranked.reverse()
        return ranked[:top] if top else ranked

    def get_best_run_by_primary_metric(
        self, include_failed: bool = True, include_canceled: bool = True
    ) -> Run | None:
        """The trial with the best primary metric (the best value each logged), or None. The same
        trial as ``get_details()["sweep"]["best_run_id"]`` (one tie rule: :mod:`torchyard.sweeps.ranking`)."""
        for entry in self.get_children_sorted_by_primary_metric(discard_no_metric=True):
            if not include_failed and entry["status"] == RunStatus.FAILED:
                continue
            if not include_canceled and entry["status"] == RunStatus.CANCELED:
                continue
            return Run(self.experiment, entry["run_id"])
        return None

    # ---- waiting ------------------------------------------------------------------------------------------

    def wait_for_completion(
        self,
        show_output: bool = False,
        wait_post_processing: bool = False,
        raise_on_error: bool = True,
        timeout: float | None = None,
        *,
        out: TextIO | None = None,
        poll_seconds: float = 0.5,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Block until the sweep ends. With ``show_output`` the trials' progress streams as it happens
        (each trial's start with its hyperparameters, every new value of the primary metric, its end
        with its status and the reason of an early termination), then the sweep's summary with the
        best trial (by the one tie rule). Raises RunFailedError as ``Run.wait_for_completion`` does."""
        if not show_output:
            return super().wait_for_completion(False, wait_post_processing, raise_on_error, timeout, out=out, **kwargs)
        stream = out or sys.stdout
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: dict[str, tuple[str, int]] = {}
        stream.write(f"HyperDrive sweep {self.id}: primary metric {self.primary_metric_name} "
                     f"({'maximize' if self.maximize else 'minimize'})\n")
        while True:
            done = RunStatus(self.get_status()).is_terminal
            self._show_progress(stream, seen)
            if done or (deadline is not None and time.monotonic() > deadline):
                break
            time.sleep(poll_seconds)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        stream.write(self._sweep_summary())
        stream.flush()
        return super().wait_for_completion(False, wait_post_processing, raise_on_error, remaining, out=out, **kwargs)

    def _show_progress(self, stream: TextIO, seen: dict[str, tuple[str, int]]) -> None:
        metric = self.primary_metric_name
        for entry in self._best_values():
            run_id, status = entry["run_id"], entry["status"]
            before_status, before_n = seen.get(run_id, ("", 0))
            if not before_status:
                stream.write(f"[{run_id}] started with {json.dumps(entry['hyperparameters'], sort_keys=True)}\n")
            if entry["intervals"] > before_n:
                series = self._store.get_series(run_id, rank=0, name=metric).get((0, metric))
                values = series[0] if series else []
                for i in range(before_n, min(len(values), entry["intervals"])):
                    stream.write(f"[{run_id}] {metric} = {values[i]:g} (interval {i + 1})\n")
            if status != before_status and RunStatus(status).is_terminal:
                why = ""
                if status == RunStatus.CANCELED:
                    details = json.loads(self._store.get_run(run_id).get("details") or "{}")
                    why = f": {details['cancel_reason']}" if details.get("cancel_reason") else ""
                best = entry["best_primary_metric"]
                stream.write(f"[{run_id}] {status}{why}" + (f" (best {metric} {best:g})" if best is not None else "") + "\n")
            seen[run_id] = (status, entry["intervals"])
        stream.flush()

    def _sweep_summary(self) -> str:
        ranked = self.get_children_sorted_by_primary_metric()
        counts: dict[str, int] = {}
        for entry in ranked:
            counts[entry["status"]] = counts.get(entry["status"], 0) + 1
        lines = [f"\nSweep {self.id} ended {self.get_status()}: {len(ranked)} trials ("
                 + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")"]
        best = ranked[0] if ranked and ranked[0]["best_primary_metric"] is not None else None
        if best is not None:
            lines.append(f"Best trial: {best['run_id']} {self.primary_metric_name}={best['best_primary_metric']:g} "
                         f"{json.dumps(best['hyperparameters'], sort_keys=True)}")
        return "\n".join(lines) + "\n"

    # ---- control ------------------------------------------------------------------------------------------

    def cancel(self, reason: str | None = None, *, requeue: bool = False) -> None:
        """Cancel the sweep and every trial still going. Idempotent. (A sweep is not preempted as a
        whole: ``requeue`` its trials one by one.)"""
        from torchyard.runtime.sweep_process import controller_alive  # noqa: PLC0415

        if requeue:
            from torchyard.errors import NotSupportedError  # noqa: PLC0415

            raise NotSupportedError("requeue", "a sweep is not preempted as a whole; requeue its trials (child runs)")
        row = self._store.get_run(self.id)
        if row["status"] in TERMINAL_VALUES:
            return
        why = reason or "canceled by user"
        self._store.set_status(self.id, RunStatus.CANCEL_REQUESTED, why)
        for child in self._child_rows():
            if child["status"] not in TERMINAL_VALUES:
                Run(self.experiment, child["id"], _row=child).cancel(f"sweep {self.id} was canceled: {why}")
        pid = row.get("supervisor_pid")
        if controller_alive(self.workdir):
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            return
        # no controller to finish it: the trials were asked to stop, the sweep ends here
        self._store.set_status(self.id, RunStatus.CANCELED, why, details={"cancel_reason": why})

    def resume(self) -> bool:
        """Start the sweep's controller again if it is not running (after a crash or a kill);
        finished trials are not rerun. Returns whether a controller was started."""
        from torchyard.runtime.sweep_process import resume  # noqa: PLC0415

        row = self._store.get_run(self.id)
        if row["status"] in TERMINAL_VALUES:
            return False
        started = resume(self.workdir) is not None
        if started:
            deadline = time.time() + 10
            while time.time() < deadline and self._store.get_run(self.id)["supervisor_pid"] == row["supervisor_pid"]:
                time.sleep(0.05)
        return started

    def __repr__(self) -> str:
        return f"HyperDriveRun(experiment={self.experiment.name!r}, id={self.id!r}, status={self._row['status']!r})"
