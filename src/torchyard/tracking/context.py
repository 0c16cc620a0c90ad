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

from torchyard.limits import MAX_NAME, MAX_STRING_VALUE, MAX_TAG_VALUE, check_name, check_text
from torchyard.paths import RunPaths
from torchyard.tracking import journal as j
from torchyard.tracking.checkpoint import CheckpointMixin

FLUSH_INTERVAL = 0.5
_time = time.time


#: names already checked against torchyard.limits (a training loop logs the same few names again and again)
_checked_names: set[str] = set()
_STEP_MIN, _STEP_MAX = -(2**63) + 1, 2**63 - 1  # int64, less the value that stands for "no step"


def _name(name: str) -> str:
    if name not in _checked_names:
        check_name(name)
        if len(_checked_names) < 100_000:
            _checked_names.add(name)
    return name


def _step(name: str, step: Any) -> int:
    try:
        value = step.__index__()
    except (AttributeError, TypeError):
        raise TypeError(f"run.log({name!r}, ...): step must be an integer or None, not {type(step).__name__}") from None
    if not _STEP_MIN <= value <= _STEP_MAX:
        raise ValueError(f"run.log({name!r}, ...): step {value} is outside the 64-bit range")
    return int(value)


def _number(name: str, value: int) -> float:
    """An int as the float64 the store keeps (exact up to 2**53); one too large for a float is refused."""
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"run.log({name!r}, ...): a {value.bit_length()}-bit integer is too large for a 64-bit float") from None


def _coerce(name: str, value: Any) -> tuple[int, Any]:
    """(kind, value) for anything but a plain int/float."""
    if isinstance(value, bool):
        return j.SCALAR, float(value)
    if isinstance(value, int):
        return j.SCALAR, _number(name, value)
    if isinstance(value, float):
        return j.SCALAR, float(value)
    if isinstance(value, str):
        return j.STRING, check_text(value, f"run.log({name!r}, ...): the string value", MAX_STRING_VALUE)
    item = getattr(value, "item", None)  # numpy scalars, 0-d/1-element tensors and arrays
    if item is not None:
        try:
            v = item()
        except (ValueError, RuntimeError):
            raise TypeError(
                f"run.log({name!r}, ...): value has more than one element; use log_list for sequences"
            ) from None
        if isinstance(v, bool | int):
            return j.SCALAR, _number(name, v)
        if isinstance(v, float):
            return j.SCALAR, v
    raise TypeError(f"run.log({name!r}, ...): unsupported value type {type(value).__name__}; log a number or string")


class _RunLogging:
    """The logging API shared by the live and offline runs."""

    def _emit(self, record: tuple[Any, ...]) -> None:
        raise NotImplementedError

    def log(self, name: str, value: Any, step: int | None = None, description: str = "") -> None:
        """Log one value of metric ``name`` (a number or a string), with an optional step.

        Numbers are kept as 64-bit floats (ints exactly up to 2**53; ``inf`` and ``nan`` as such);
        a name over :data:`torchyard.limits.MAX_NAME` characters, a string value over its limit or a
        step that is not an integer raises here, in the script, and loses nothing logged before."""
        if name not in _checked_names:
            _name(name)
        if step is not None and (step.__class__ is not int or not _STEP_MIN <= step <= _STEP_MAX):
            step = _step(name, step)
        cls = value.__class__
        if cls is float:
            self._emit((j.SCALAR, name, value, step, _time()))
        elif cls is int:
            self._emit((j.SCALAR, name, _number(name, value), step, _time()))
        else:
            kind, v = _coerce(name, value)
            self._emit((kind, name, v, step, _time()))

    def log_scalars(self, items: Iterable[tuple[str, float, int | None, float]]) -> None:
        """Log many scalar values at once, each ``(name, value, step, wall time in seconds)``.

        The bulk path for integrations that carry their own timestamps (MLflow's ``log_metric`` and
        ``log_batch``): the values go to the same journal as :meth:`log`."""
        emit = self._emit
        for name, value, step, ts in items:
            if name not in _checked_names:
                _name(name)
            if step is not None and (step.__class__ is not int or not _STEP_MIN <= step <= _STEP_MAX):
                step = _step(name, step)
            emit((j.SCALAR, name, float(value), step, float(ts)))

    def log_list(self, name: str, value: Sequence[Any], description: str = "") -> None:
        """Log a list of values under one name."""
        _name(name)
        self._emit((j.LIST, name, [_plain(v, name) for v in value], None, _time()))

    def log_row(self, name: str, description: str | None = None, **kwargs: Any) -> None:
        """Log one row of a table metric: ``run.log_row("acc", epoch=1, value=0.9)``."""
        _name(name)
        self._emit((j.ROW, name, {k: _plain(v, name) for k, v in kwargs.items()}, None, _time()))

    def log_table(self, name: str, value: Mapping[str, Sequence[Any]], description: str = "") -> None:
        """Log a table as a dict of equally long columns."""
        _name(name)
        table = {k: [_plain(v, name) for v in col] for k, col in value.items()}
        if len({len(c) for c in table.values()}) > 1:
            raise ValueError(f"log_table({name!r}): columns must have the same length")
        self._emit((j.TABLE, name, table, None, _time()))

    def log_image(self, name: str, path: str | None = None, plot: Any = None, description: str = "") -> None:
        """Log an image from a file ``path`` or a matplotlib figure/pyplot ``plot``."""
        if (path is None) == (plot is None):
            raise ValueError(f"log_image({name!r}): give exactly one of path or plot")
        _name(name)
        self._emit((j.IMAGE, name, self._save_image(name, path, plot), None, _time()))

    def tag(self, key: str, value: str | None = None) -> None:
        """Set a mutable tag (``value`` defaults to the empty string)."""
        key = check_name(str(key), "tag key")
        text = check_text("" if value is None else str(value), f"tag {key!r}: the value", MAX_TAG_VALUE)
        self._emit((j.TAG, key, text, None, _time()))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.tag(key, value)

    def alert(self, title: str, text: str = "", level: str = "INFO") -> None:
        """Tell the workspace's alert subscribers (``torchyard alert add URL --events alert``) something
        now, from the script: ``run.alert("loss diverged", f"loss={loss} at step {step}", "WARN")``
        (W&B's ``wandb.alert``). ``level`` is INFO, WARN or ERROR."""
        if level not in ("INFO", "WARN", "ERROR"):
            raise ValueError(f"run.alert: level must be INFO, WARN or ERROR, got {level!r}")
        title = check_text(str(title), "run.alert: the title", MAX_NAME, empty_ok=False)
        text = check_text(str(text), "run.alert: the text", MAX_TAG_VALUE)
        self._emit((j.ALERT, title, {"text": text, "level": level}, None, _time()))

    def add_properties(self, properties: Mapping[str, Any]) -> None:
        """Add immutable properties; re-setting one to another value is refused by the store."""
        for key, value in properties.items():
            name = check_name(str(key), "property key")
            text = check_text(str(value), f"property {name!r}: the value", MAX_TAG_VALUE)
            self._emit((j.PROPERTY, name, text, None, _time()))

    def _save_image(self, name: str, path: str | None, plot: Any) -> str:
        raise NotImplementedError


def _plain(value: Any, name: str) -> Any:
    if isinstance(value, str):
        return check_text(value, f"{name!r}: a cell", MAX_STRING_VALUE)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else _number(name, value)
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
        self._pending: list[tuple[Any, ...]] = []  # taken from the queue, not yet in the journal (disk full)
        self._write_error: str | None = None
        self._emit = self._queue.append  # type: ignore[method-assign,assignment]
        self._lock = threading.Lock()
        self._images = 0
        self._thread = threading.Thread(target=self._loop, name="torchyard-flush", daemon=True)
        self._thread.start()
        atexit.register(self._flush_at_exit)
        self._install_sigterm()

    @property
    def is_offline(self) -> bool:
        return False

    def flush(self) -> None:
        """Write everything logged so far to the journal.

        A write the disk refuses (full, read-only) is undone to the last whole frame and its values
        are kept in memory for the next flush, so a fault loses nothing and leaves no torn frame;
        the OSError is raised to the caller."""
        with self._lock:
            q = self._queue
            n = len(q)
            if not n and not self._pending:
                return
            pop = q.popleft
            records = self._pending + [pop() for _ in range(n)] if self._pending else [pop() for _ in range(n)]
            self._pending = []
            frame = j.encode_frame(*j.pack(records))
            fd = self._fh.fileno()
            start = os.fstat(fd).st_size
            try:
                view = memoryview(frame)
                while view:
                    written = self._fh.write(view)
                    view = view[written or 0:]
            except OSError:
                self._pending = records
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    pass
                raise

    def _loop(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL)
            self._flush_reporting()

    def _flush_reporting(self) -> bool:
        """One flush; a failure is reported once (not every half second) and its recovery too."""
        try:
            self.flush()
        except Exception as err:  # disk full, read-only: the values wait in memory
            message = f"{type(err).__name__}: {err}"
            if message != self._write_error:
                print(f"torchyard: cannot write the metrics journal ({message}); "
                      f"{len(self._pending):,} value(s) wait in memory and are written when it can be",
                      file=sys.stderr, flush=True)
            self._write_error = message
            return False
        if self._write_error is not None:
            print("torchyard: the metrics journal is written again; nothing was lost", file=sys.stderr, flush=True)
            self._write_error = None
        return True

    def _flush_at_exit(self) -> None:
        """At exit, give a refusing disk up to TORCHYARD_JOURNAL_EXIT_WAIT seconds (default 30) to take
        the last values, then say how many could not be kept."""
        deadline = time.time() + float(os.environ.get("TORCHYARD_JOURNAL_EXIT_WAIT", "30") or 0)
        while not self._flush_reporting():
            if time.time() >= deadline:
                print(f"torchyard: {len(self._pending) + len(self._queue):,} logged value(s) could not be written "
                      "to the metrics journal before the script ended", file=sys.stderr, flush=True)
                return
            time.sleep(FLUSH_INTERVAL)

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def _on_term(signum: int, _frame: Any) -> None:
            try:
                self._flush_reporting()
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
        what = {j.TAG: "tag", j.PROPERTY: "property", j.ALERT: "alert"}.get(kind, "metric")
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
