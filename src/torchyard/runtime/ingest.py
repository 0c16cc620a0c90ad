"""Moving the ranks' metric journals into the store, in batches, while a run goes.

The journals stay the truth until the store has every value: a rank's journal offset moves on only
after the store took the whole batch in one transaction (:meth:`Store.ingest_batch`). A store that
refuses (disk full, read-only, the database down) leaves the offsets where they were; the next
ingest, after a backoff, reads the same frames again, so nothing is lost or stored twice.
:func:`repair` rebuilds a run's stored metrics from its journals after the fact.

A retried run's journals go on across attempts. From :meth:`Ingestor.begin_attempt` on (given where
each journal stood when the new attempt began), the first values a resumed attempt logs for a metric
replace what the store holds for it from that step on: the lost attempt's values past the checkpoint
the new one resumed from, so a chart has one value per step.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from torchyard.tracking import journal as j
from torchyard.workspace.store import quiet_print, store_fault


class Ingestor:
    """Moves new journal records of every rank into the store."""

    def __init__(self, store: Any, run_id: str, journal_dir: str, say: Any = quiet_print,
                 on_alert: Any = None) -> None:
        self.store = store
        self.run_id = run_id
        self.journal_dir = journal_dir
        #: by file name: (the rank its values are stored under, its reader)
        self.readers: dict[str, tuple[int, j.JournalReader]] = {}
        self.say = say
        #: called with each ``run.alert()`` record once its batch is stored (the supervisor delivers it)
        self.on_alert = on_alert
        #: the store fault that holds values back (None when everything read is stored)
        self.fault: str | None = None
        self._retry_at = 0.0
        self._delay = 0.5
        self._offsets: dict[str, int] | None = None
        #: where each journal stood when the attempt under way began (None: the first attempt)
        self.attempt_start: dict[str, int] | None = None
        #: the metrics (by journal) whose earlier values this attempt already replaced
        self._replaced: dict[str, set[str]] = {}

    def journal_sizes(self) -> dict[str, int]:
        """Every rank journal's size now (by name under the journal folder): a new attempt's start."""
        self._discover()
        out: dict[str, int] = {}
        for key, (_rank, reader) in self.readers.items():
            try:
                out[key] = os.path.getsize(reader.path)
            except OSError:
                out[key] = 0
        return out

    def begin_attempt(self, start: dict[str, int] | None) -> None:
        """A retry's attempt begins where ``start`` says each journal stood (see the module doc)."""
        self.attempt_start = dict(start) if start is not None else None
        self._replaced = {}

    def _stored_offsets(self) -> dict[str, int]:
        """Where a supervisor before this one left each journal (read once; {} for a new run)."""
        if self._offsets is None:
            self._offsets = self.store.ingest_offsets(self.run_id) if hasattr(self.store, "ingest_offsets") else {}
        return self._offsets

    def _discover(self) -> None:
        # rank_N: rank N's journal; system/rank_N: the system metrics of the node whose first rank is N
        # (torchyard.launch.sampler), stored as rank N's. A subfolder: its appends are no rank's activity
        for sub in ("", "system"):
            folder = os.path.join(self.journal_dir, sub)
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in names:
                if name.startswith("rank_") and name.endswith(".journal"):
                    try:
                        rank = int(name[5:-8])
                    except ValueError:
                        continue
                    key = os.path.join(sub, name)
                    if key not in self.readers:
                        reader = j.JournalReader(os.path.join(folder, name))
                        reader.offset = self._stored_offsets().get(key, 0)
                        self.readers[key] = (rank, reader)

    def ingest(self, force: bool = False) -> int:
        """Store what the journals gained; how many values were stored. A store fault is remembered
        in :attr:`fault` (said once) and retried after a growing delay, never raised; an error that is
        not a passing fault (a bug, a value the store refuses) is raised."""
        if self.fault is not None and not force and time.time() < self._retry_at:
            return 0
        total = 0
        try:
            self._discover()
            for key, (rank, reader) in self.readers.items():
                total += self._ingest_rank(key, rank, reader)
        except Exception as err:
            fault = store_fault(err, getattr(self.store, "url", ""))
            if fault is None:
                raise
            if fault != self.fault:
                self.say(f"torchyard supervisor: metrics wait in the journals: {fault}", flush=True)
            self.fault = fault
            self._retry_at = time.time() + self._delay
            self._delay = min(self._delay * 2, 10.0)
            return total
        if self.fault is not None:
            self.say("torchyard supervisor: the store takes metrics again; nothing was lost", flush=True)
        self.fault, self._delay = None, 0.5
        return total

    def drain(self, seconds: float) -> str | None:
        """Ingest until every journal is stored or ``seconds`` pass; the fault left, or None."""
        deadline = time.time() + seconds
        while True:
            self.ingest(force=True)
            if self.fault is None or time.time() >= deadline:
                return self.fault
            time.sleep(max(0.0, min(self._retry_at, deadline) - time.time()))

    def _ingest_rank(self, key: str, rank: int, reader: j.JournalReader) -> int:
        begun = reader.offset
        series, records, end = reader.peek()
        if not series and not records:
            return 0
        rows: list[tuple[Any, ...]] = []
        tags: dict[str, str] = {}
        props: dict[str, str] = {}
        alerts: list[dict[str, Any]] = []
        dumps = json.dumps
        for kind, name, value, step, ts in records:
            if kind == j.TAG:
                tags[name] = value
            elif kind == j.PROPERTY:
                props[name] = value
            elif kind == j.ALERT:
                alerts.append({"title": name, "rank": rank, "time": ts, **(value if isinstance(value, dict) else {})})
            else:
                rows.append((name, rank, step, None, dumps(value), kind, ts))
        replace = self._replace_from(key, begun, series, rows)
        refused = self.store.ingest_batch(self.run_id, rank, series, rows, tags, props, journal=key, offset=end,
                                          replace_from=replace or None)
        reader.offset = end
        if replace:
            self._replaced.setdefault(key, set()).update(replace)
        for message in refused:  # an immutable property re-set: keep the run going
            self.say(f"torchyard supervisor: {message}", flush=True)
        for alert in alerts:  # once: only after the batch is stored (a batch read again is never re-sent)
            if self.on_alert is not None:
                try:
                    self.on_alert(alert)
                except Exception as err:  # noqa: BLE001 - an alert is never a reason to lose the run
                    self.say(f"torchyard supervisor: alert not sent: {err}", flush=True)
        return len(records) - len(alerts) + sum(len(s[1]) for s in series)


    def _replace_from(self, key: str, begun: int, series: list[list[Any]], rows: list[tuple[Any, ...]]
                      ) -> dict[str, int]:
        """Metric → the first step this batch logs for it, for the metrics whose lost-attempt values
        it replaces: a resumed attempt's first values of each metric (system metrics never)."""
        if self.attempt_start is None or key.startswith("system") or begun < self.attempt_start.get(key, 0):
            return {}
        done = self._replaced.get(key, set())
        first: dict[str, int] = {}
        for name, _values, steps, _ts in series:
            explicit = [s for s in steps if s is not None]
            if name not in done and explicit:
                first[name] = min(first.get(name, explicit[0]), *explicit)
        for name, _rank, step, *_rest in rows:
            if name not in done and step is not None:
                first[name] = min(first.get(name, step), step)
        return first


def repair(store: Any, run_id: str, journal_dir: str) -> int:
    """Store a run's metrics again from its journals (the truth): its stored values are replaced by
    every value the journals hold. How many values were stored."""
    if not os.path.isdir(journal_dir):
        from torchyard.errors import NotFoundError  # noqa: PLC0415

        raise NotFoundError(f"run {run_id} has no metric journals at {journal_dir}; nothing to repair from")
    store.clear_metrics(run_id)
    ingestor = Ingestor(store, run_id, journal_dir, say=lambda *a, **k: None)
    total = ingestor.ingest(force=True)
    if ingestor.fault is not None:
        from torchyard.errors import WorkspaceError  # noqa: PLC0415

        raise WorkspaceError(f"run {run_id} could not be repaired: {ingestor.fault}")
    return total
