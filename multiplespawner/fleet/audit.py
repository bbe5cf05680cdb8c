"""The fleet's audit trail: one JSON line per bulk action, appended, never rewritten.

Kept next to the template editor's history (by default ``<catalogue dir>/.fleet-history.jsonl``
beside its ``.history.jsonl``): who, when, which filter, which servers and what happened to
each. Files are written in worker threads (the service's event loop never waits on the disk)
and created owner-only.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from ..json_file import utc_timestamp


class AuditLog:
    """Append and read back records of ``path`` (blocking: call from a worker thread)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, record: dict) -> dict:
        """Write ``record`` with ``time`` (ISO 8601, UTC) added; return what was written."""
        record = {"time": utc_timestamp(), **record}
        line = json.dumps(record, sort_keys=True) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(line)
        return record

    def read(self, actor: str | None = None, limit: int = 100) -> list[dict]:
        """The newest ``limit`` records (newest first), only ``actor``'s if given."""
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in reversed(lines):
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash is skipped, not fatal
            if actor is None or record.get("actor") == actor:
                records.append(record)
                if len(records) >= limit:
                    break
        return records
