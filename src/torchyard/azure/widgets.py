"""Azure's notebook boilerplate: ``VERSION``, ``set_diagnostics_collection`` and ``RunDetails``.

``RunDetails(run).show()`` is, in a Jupyter kernel with ipywidgets installed, a live widget that
returns at once: a background thread refreshes it every ``refresh`` seconds (status and times, rank
0's metrics as a table with a small chart of each series, the tail of every rank's log; for a sweep,
the trials table, best first) until the run ends, while the kernel runs the next cells. Outside
Jupyter (or without ipywidgets) it is a plain-text follower: it prints the run's status and rank 0's
output (a sweep's trials as they start, log the primary metric and end, then the best trial) until
the run ends, and returns. ipywidgets is imported only by ``show()`` in a kernel, never by
``import torchyard``.
"""

from __future__ import annotations

import html
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, TextIO

import torchyard
from torchyard.status import TERMINAL_VALUES

#: what Azure notebooks print as ``azureml.core.VERSION``: torchyard's version
VERSION = torchyard.__version__

#: lines of each rank's log the widget shows
LOG_TAIL_LINES = 20


def set_diagnostics_collection(send_diagnostics: bool = True, path: str | None = None, reset: bool = False) -> None:
    """Azure's telemetry opt-in. torchyard sends no telemetry at all, so there is nothing to turn on or
    off; the call is accepted and does nothing (documented, and no result depends on it)."""
    return None


def in_jupyter_kernel() -> bool:
    """Whether this code runs in a Jupyter kernel (IPython already loaded, with a kernel attached)."""
    ipython_mod = sys.modules.get("IPython")
    if ipython_mod is None:
        return False
    try:
        shell = ipython_mod.get_ipython()
    except Exception:  # noqa: BLE001 - any odd IPython state means: not a kernel
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


class RunDetails:
    """``RunDetails(run_instance).show()``: a run or a sweep, live (see the module)."""

    def __init__(self, run_instance: Any, refresh: float = 1.0) -> None:
        self.run_instance = run_instance
        self.refresh = refresh
        #: the ipywidgets box once shown as a widget (None in text mode)
        self.widget: Any = None
        self._parts: dict[str, Any] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        #: the last error the updating thread met (shown in the widget too), None if none
        self.error: str | None = None
        self._status = ""
        self.widget_settings: dict[str, Any] = {}

    # ---- showing ---------------------------------------------------------------------------------
    def show(self, render_lib: Callable[[str], Any] | None = None, widget_settings: dict[str, Any] | None = None,
             out: TextIO | None = None, timeout: float | None = None) -> None:
        """In Jupyter (with ipywidgets): display the live widget and return at once. Elsewhere, or with
        ``out`` given: print the run's progress until it ends (a failed run is reported, not raised).
        ``render_lib`` (Azure's, for Databricks' ``displayHTML``): called with the widget's HTML each time
        it changes, until the run ends (this blocks). ``widget_settings``: Azure's ``{"debug": True}``
        adds the updating thread's traceback to the widget when an update fails."""
        self.widget_settings = dict(widget_settings or {})
        if render_lib is not None:
            self._render_with(render_lib, timeout)
            return
        if out is None and in_jupyter_kernel():
            try:
                import ipywidgets  # noqa: F401, PLC0415 - only here, only in a kernel
            except ImportError:
                pass
            else:
                self._show_widget(timeout)
                return
        self._show_text(out, timeout)

    def _render_with(self, render_lib: Callable[[str], Any], timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        while True:
            data = self.get_widget_data()
            page = "".join(_html_parts(data, self.run_instance).values())
            if page != last:
                render_lib(page)
                last = page
            if data["status"] in TERMINAL_VALUES or (deadline is not None and time.monotonic() > deadline):
                self._status = data["status"]
                return
            time.sleep(self.refresh)

    def _show_text(self, out: TextIO | None, timeout: float | None) -> None:
        run = self.run_instance
        stream = out or sys.stdout
        stream.write(f"{type(run).__name__} {run.id} (experiment {run.experiment.name}): {run.get_status()}\n")
        run.wait_for_completion(show_output=True, raise_on_error=False, timeout=timeout, out=stream)
        stream.write(f"{run.id}: {run.get_status()}\n")
        stream.flush()

    def _show_widget(self, timeout: float | None) -> None:
        import ipywidgets as widgets  # noqa: PLC0415
        from IPython.display import display  # noqa: PLC0415

        title = widgets.HTML(value=f"<b>{html.escape(type(self.run_instance).__name__)} "
                                   f"{html.escape(self.run_instance.id)}</b>")
        self._parts = {
            "status": widgets.HTML(value="status: …"),
            "metrics": widgets.HTML(value=""),
            "trials": widgets.HTML(value=""),
            "logs": widgets.HTML(value=""),
        }
        self.widget = widgets.VBox([title, *self._parts.values()])
        display(self.widget)
        self.update()
        if self.status not in TERMINAL_VALUES:
            self._thread = threading.Thread(target=self._follow, args=(timeout,), name=f"RunDetails-{self.run_instance.id}",
                                            daemon=True)
            self._thread.start()

    def _follow(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stop.wait(self.refresh):
            try:
                self.update()
            except Exception as err:  # noqa: BLE001 - shown in the widget; the kernel goes on
                self.error = f"{type(err).__name__}: {err}"
                shown = traceback.format_exc() if self.widget_settings.get("debug") else self.error
                self._parts["status"].value += f" <pre>(update failed: {html.escape(shown)})</pre>"
            if self.status in TERMINAL_VALUES or (deadline is not None and time.monotonic() > deadline):
                return

    def stop(self) -> None:
        """Stop updating the widget (it stops by itself when the run ends)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the widget's updating thread has stopped (the run ended); True if it has."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def status(self) -> str:
        """The status the widget shows now ("" before it is shown)."""
        return self._status

    # ---- what is shown ---------------------------------------------------------------------------
    def update(self) -> None:
        """Refresh every part of the widget from the run (what the updating thread calls)."""
        data = self.get_widget_data()
        for name, value in _html_parts(data, self.run_instance).items():
            self._parts[name].value = value
        self._status = data["status"]

    def get_widget_data(self, widget_settings: dict[str, Any] | None = None) -> dict[str, Any]:
        """What the widget shows, as data: status, details, rank 0's metrics (and a sweep's ranking).
        ``widget_settings`` is accepted as in Azure and changes nothing here."""
        run = self.run_instance
        data: dict[str, Any] = {"run_id": run.id, "status": run.get_status(), "details": run.get_details()}
        if hasattr(run, "get_children_sorted_by_primary_metric"):
            data["children"] = run.get_children_sorted_by_primary_metric()
            data["primary_metric"] = getattr(run, "primary_metric_name", "")
        else:
            data["metrics"] = run.get_metrics()
        return data


def _html_parts(data: dict[str, Any], run: Any) -> dict[str, str]:
    """The widget's parts (status, metrics, trials, logs) as HTML, from :meth:`RunDetails.get_widget_data`."""
    details = data["details"]
    status = data["status"]
    parts = {"status": "", "metrics": "", "trials": "", "logs": ""}
    times = ", ".join(f"{k}: {details.get(v)}" for k, v in
                      (("started", "startTimeUtc"), ("ended", "endTimeUtc")) if details.get(v))
    colour = {"Completed": "green", "Failed": "red", "Canceled": "gray"}.get(status, "blue")
    text = f"status: <b style='color:{colour}'>{html.escape(status)}</b>"
    if times:
        text += f" ({html.escape(times)})"
    error = (details.get("error") or {}).get("message")
    if error:
        text += f"<br><span style='color:red'>{html.escape(str(error))}</span>"
    parts["status"] = text
    if "children" in data:
        parts["trials"] = _trials_table(data["children"], data.get("primary_metric", ""))
    else:
        parts["metrics"] = _metrics_table(data.get("metrics", {}))
    parts["logs"] = _logs_html(run.workdir)
    return parts


def _sparkline(values: list[float], width: int = 120, height: int = 24) -> str:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(nums) < 2:
        return ""
    low, high = min(nums), max(nums)
    span = (high - low) or 1.0
    step = width / (len(nums) - 1)
    points = " ".join(f"{i * step:.1f},{height - (v - low) / span * (height - 2) - 1:.1f}" for i, v in enumerate(nums))
    return (f"<svg width='{width}' height='{height}'><polyline fill='none' stroke='steelblue' stroke-width='1.5' "
            f"points='{points}'/></svg>")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return html.escape(str(value))


def _metrics_table(metrics: dict[str, Any]) -> str:
    if not metrics:
        return "<i>no metrics yet</i>"
    rows = []
    for name in sorted(metrics):
        value = metrics[name]
        series = value if isinstance(value, list) else [value]
        rows.append(f"<tr><td>{html.escape(str(name))}</td><td>{_fmt(series[-1]) if series else ''}</td>"
                    f"<td>{len(series)}</td><td>{_sparkline(series)}</td></tr>")
    return ("<table><tr><th>metric</th><th>last</th><th>values</th><th>chart</th></tr>" + "".join(rows)
            + "</table>")


def _trials_table(children: list[dict[str, Any]], metric: str) -> str:
    if not children:
        return "<i>no trials yet</i>"
    rows = []
    for child in children:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in (child.get("hyperparameters") or {}).items())
        best = child.get("best_primary_metric")
        rows.append(f"<tr><td>{html.escape(str(child['run_id']))}</td><td>{html.escape(str(child.get('status')))}</td>"
                    f"<td>{'' if best is None else _fmt(best)}</td><td>{params}</td>"
                    f"<td>{child.get('intervals', '')}</td></tr>")
    return (f"<table><tr><th>trial</th><th>status</th><th>best {html.escape(metric)}</th><th>hyperparameters</th>"
            "<th>values logged</th></tr>" + "".join(rows) + "</table>")


def _logs_html(workdir: str) -> str:
    logs_dir = os.path.join(workdir, "logs")
    try:
        names = sorted(n for n in os.listdir(logs_dir) if n.startswith("rank_") and n.endswith(".txt"))
    except OSError:
        return ""
    parts = []
    for name in sorted(names, key=lambda n: (len(n), n)):
        try:
            with open(os.path.join(logs_dir, name), "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 16384))
                lines = fh.read().decode("utf-8", "replace").splitlines()[-LOG_TAIL_LINES:]
        except OSError:
            continue
        parts.append(f"<details open><summary>{html.escape(name[:-4].replace('_', ' '))}</summary>"
                     f"<pre style='max-height:12em;overflow:auto'>{html.escape(chr(10).join(lines))}</pre></details>")
    return "".join(parts)
