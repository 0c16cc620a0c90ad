"""Moving the ranks' metric journals into the store, in batches, while a run goes."""

from __future__ import annotations

import json
import os
from typing import Any

from torchyard.tracking import journal as j
from torchyard.workspace.summary import update_summary


class Ingestor:
    """Moves new journal records of every rank into the store."""

    def __init__(self, store: Any, run_id: str, journal_dir: str) -> None:
        self.store = store
        self.run_id = run_id
        self.journal_dir = journal_dir
        self.readers: dict[int, j.JournalReader] = {}

    def _discover(self) -> None:
        try:
            names = os.listdir(self.journal_dir)
        except OSError:
            return
        for name in names:
            if name.startswith("rank_") and name.endswith(".journal"):
                rank = int(name[5:-8])
                if rank not in self.readers:
                    self.readers[rank] = j.JournalReader(os.path.join(self.journal_dir, name))

    def ingest(self) -> int:
        self._discover()
        total = 0
        for rank, reader in self.readers.items():
            series, records = reader.read_new()
            if not series and not records:
                continue
            total += len(records) + sum(len(s[1]) for s in series)
            self.store.insert_series(self.run_id, rank, series)
            if series:
                try:
                    update_summary(self.store.engine, self.run_id, rank, [tuple(s) for s in series])
                except Exception as err:  # the summary serves sorting in the dashboard; never lose the run
                    print(f"torchyard supervisor: metric summary not updated: {err}", flush=True)
            rows: list[tuple[Any, ...]] = []
            tags: dict[str, str] = {}
            props: dict[str, str] = {}
            dumps = json.dumps
            for kind, name, value, step, ts in records:
                if kind == j.TAG:
                    tags[name] = value
                elif kind == j.PROPERTY:
                    props[name] = value
                else:
                    rows.append((name, rank, step, None, dumps(value), kind, ts))
            self.store.insert_metrics(self.run_id, rows)
            self.store.set_tags(self.run_id, tags)
            if props:
                try:
                    self.store.add_properties(self.run_id, props)
                except Exception as err:  # an immutable property re-set: keep the run going
                    print(f"torchyard supervisor: {err}", flush=True)
        return total
