"""The in-job side of tracking: what ``Run.get_context()`` returns inside a training script.

``log()`` appends a tuple to an in-memory deque and returns; a daemon thread writes the deque to the
rank's journal every :data:`FLUSH_INTERVAL` seconds (and at exit, and on SIGTERM when the script has
no handler of its own). The supervisor moves journals into the store. Nothing here touches the
database, so the training loop never waits on it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torchyard.paths import RunPaths
from torchyard.tracking import journal as j
from torchyard.tracking.checkpoint import CheckpointMixin

FLUSH_INTERVAL = 0.5
_time = time.time


def _coerce(name: str, value: Any) -> tuple[int, Any]:
    """(kind, value) for anything but a plain int/float."""
    if isinstance(value, bool):
        return j.SCALAR, int(value)
    if isinstance(value, int | float):
        return j.SCALAR, value
    if isinstance(value, str):
        return j.STRING, value
    item = getattr(value, "item", None)  # numpy scalars, 0-d/1-element tensors and arrays
    if item is not None:
        try:
            v = item()
        except (ValueError, RuntimeError):
            raise TypeError(
                f"run.log({name!r}, ...): value has more than one element; use log_list for sequences"
            ) from None
        if isinstance(v, bool | int | float):
            return j.SCALAR, v
    raise TypeError(f"run.log({name!r}, ...): unsupported value type {type(value).__name__}; log a number or string")


class _RunLogging:
    """The logging API shared by the live and offline runs."""

    def _emit(self, record: tuple[Any, ...]) -> None:
        raise NotImplementedError

    def log(self, name: str, value: Any, step: int | None = None, description: str = "") -> None:
        """Log one value of metric ``name`` (a number or a string), with an optional step."""
        cls = value.__class__
        if cls is float or cls is int:
            self._emit((j.SCALAR, name, value, step, _time()))
        else:
            kind, v = _coerce(name, value)
            self._emit((kind, name, v, step, _time()))

    def log_scalars(self, items: Iterable[tuple[str, float, int | None, float]]) -> None:
        """Log many scalar values at once, each ``(name, value, step, wall time in seconds)``.

        The bulk path for integrations that carry their own timestamps (MLflow's ``log_metric`` and
        ``log_batch``): the values go to the same journal as :meth:`log`."""
        emit = self._emit
        for name, value, step, ts in items:
            emit((j.SCALAR, name, float(value), step, ts))

    def log_list(self, name: str, value: Sequence[Any], description: str = "") -> None:
        """Log a list of values under one name."""
        self._emit((j.LIST, name, [_plain(v, name) for v in value], None, _time()))

    def log_row(self, name: str, description: str | None = None, **kwargs: Any) -> None:
        """Log one row of a table metric: ``run.log_row("acc", epoch=1, value=0.9)``."""
        self._emit((j.ROW, name, {k: _plain(v, name) for k, v in kwargs.items()}, None, _time()))

    def log_table(self, name: str, value: Mapping[str, Sequence[Any]], description: str = "") -> None:
        """Log a table as a dict of equally long columns."""
        table = {k: [_plain(v, name) for v in col] for k, col in value.items()}
        if len({len(c) for c in table.values()}) > 1:
            raise ValueError(f"log_table({name!r}): columns must have the same length")
        self._emit((j.TABLE, name, table, None, _time()))

    def log_image(self, name: str, path: str | None = None, plot: Any = None, description: str = "") -> None:
        """Log an image from a file ``path`` or a matplotlib figure/pyplot ``plot``."""
        if (path is None) == (plot is None):
            raise ValueError(f"log_image({name!r}): give exactly one of path or plot")
        self._emit((j.IMAGE, name, self._save_image(name, path, plot), None, _time()))

    def tag(self, key: str, value: str | None = None) -> None:
        """Set a mutable tag (``value`` defaults to the empty string)."""
        self._emit((j.TAG, str(key), "" if value is None else str(value), None, _time()))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.tag(key, value)

    def add_properties(self, properties: Mapping[str, Any]) -> None:
        """Add immutable properties; re-setting one to another value is refused by the store."""
        for key, value in properties.items():
            self._emit((j.PROPERTY, str(key), str(value), None, _time()))

    def _save_image(self, name: str, path: str | None, plot: Any) -> str:
        raise NotImplementedError


def _plain(value: Any, name: str) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    return _coerce(name, value)[1]


class LiveRun(_RunLogging, CheckpointMixin):
    """The run a script sees when torchyard launched it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.id = env["TORCHYARD_RUN_ID"]
        self.experiment_name = env.get("TORCHYARD_EXPERIMENT", "")
        self.rank = int(env.get("RANK", "0"))
        self.output_dir = env.get("TORCHYARD_OUTPUT_DIR", os.path.abspath("outputs"))
        self._upload_dir = env.get("TORCHYARD_UPLOAD_DIR") or RunPaths(os.getcwd()).uploads
        path = j.journal_path(env["TORCHYARD_JOURNAL_DIR"], self.rank)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._fh = open(path, "ab", buffering=0)  # noqa: SIM115 - lives as long as the process
        self._queue: deque[tuple[Any, ...]] = deque()
        self._emit = self._queue.append  # type: ignore[method-assign,assignment]
        self._lock = threading.Lock()
        self._images = 0
        self._thread = threading.Thread(target=self._loop, name="torchyard-flush", daemon=True)
        self._thread.start()
        atexit.register(self.flush)
        self._install_sigterm()

    @property
    def is_offline(self) -> bool:
        return False

    def flush(self) -> None:
        """Write everything logged so far to the journal."""
        with self._lock:
            q = self._queue
            n = len(q)
            if not n:
                return
            pop = q.popleft
            records = [pop() for _ in range(n)]
            self._fh.write(j.encode_frame(*j.pack(records)))

    def _loop(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL)
            try:
                self.flush()
            except Exception as err:  # pragma: no cover - disk full and the like
                print(f"torchyard: could not write metrics journal: {err}", file=sys.stderr)

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def _on_term(signum: int, _frame: Any) -> None:
            try:
                self.flush()
            finally:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        signal.signal(signal.SIGTERM, _on_term)

    def upload_file(self, name: str, path_or_stream: Any) -> None:
        """Store a file as run artifact ``name`` (e.g. ``"outputs/report.txt"``)."""
        dest = os.path.join(self._upload_dir, _safe_rel(name))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if isinstance(path_or_stream, str | os.PathLike):
            if not os.path.isfile(path_or_stream):
                raise FileNotFoundError(f"upload_file({name!r}): {os.fspath(path_or_stream)!r} does not exist")
            shutil.copyfile(path_or_stream, dest)
        else:
            with open(dest, "wb") as out:
                shutil.copyfileobj(path_or_stream, out)

    def _save_image(self, name: str, path: str | None, plot: Any) -> str:
        self._images += 1
        rel = f"images/{_safe_rel(name)}_{self.rank}_{self._images}.png"
        dest = os.path.join(self._upload_dir, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if path is not None:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"log_image({name!r}): {path!r} does not exist")
            shutil.copyfile(path, dest)
        else:
            plot.savefig(dest)
        return rel

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, experiment={self.experiment_name!r}, rank={self.rank})"


class OfflineRun(_RunLogging, CheckpointMixin):
    """What a script gets when run bare: it prints what it would have logged."""

    id = "OfflineRun"
    experiment_name = "offline"
    rank = 0

    def __init__(self) -> None:
        self.output_dir = os.path.abspath("outputs")

    @property
    def is_offline(self) -> bool:
        return True

    def _emit(self, record: tuple[Any, ...]) -> None:
        kind, name, value, step, _ts = record
        what = {j.TAG: "tag", j.PROPERTY: "property"}.get(kind, "metric")
        at = f" (step {step})" if step is not None else ""
        print(f"[torchyard offline] {what} {name} = {value!r}{at}", flush=True)

    def flush(self) -> None:
        pass

    def upload_file(self, name: str, path_or_stream: Any) -> None:
        print(f"[torchyard offline] upload_file {name}", flush=True)

    def _save_image(self, name: str, path: str | None, plot: Any) -> str:
        return f"images/{name}.png"

    def __repr__(self) -> str:
        return "Run(offline)"


def _safe_rel(name: str) -> str:
    rel = os.path.normpath(name).lstrip("/")
    if rel.startswith(".."):
        raise ValueError(f"artifact name {name!r} must stay inside the run")
    return rel


_context: LiveRun | OfflineRun | None = None
_context_lock = threading.Lock()


def get_context(allow_offline: bool = True) -> LiveRun | OfflineRun:
    """The current run: live when torchyard launched this process, offline otherwise."""
    global _context
    with _context_lock:
        if _context is None:
            if os.environ.get("TORCHYARD_RUN_ID") and os.environ.get("TORCHYARD_JOURNAL_DIR"):
                _context = LiveRun(os.environ)
            elif allow_offline:
                _context = OfflineRun()
            else:
                from torchyard.errors import TorchyardError  # noqa: PLC0415

                raise TorchyardError("not inside a torchyard run and allow_offline=False")
        return _context
