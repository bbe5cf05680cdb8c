"""The small JSON files the fleet service writes and the hub reads (drained hosts, session
extensions): read with a clear error, written atomically and owner-only. Standard library only.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path


def utc_timestamp(when: float | None = None) -> str:
    """``when`` (Unix time; default now) as the files' and records' ISO 8601 UTC text,
    e.g. ``2026-12-03T09:02:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def read_document(path: str | os.PathLike, key: str, what: str) -> dict:
    """The object under ``key`` of the JSON file ``path`` (blocking). A missing file is an
    empty object; an unreadable or malformed one raises ``ValueError`` naming ``what`` (e.g.
    "the drain file") and the path."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ValueError(f"{what} {path} cannot be read: {e}") from e
    try:
        value = json.loads(text)[key]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{what} {path} is not {{\"{key}\": {{...}}}}") from e
    if not isinstance(value, dict):
        raise ValueError(f"{what} {path} is not {{\"{key}\": {{...}}}}")
    return value


def write_document(path: str | os.PathLike, key: str, value: dict) -> None:
    """Replace ``path`` with ``{key: value}`` in one rename (readers see the old file or the
    new one, never half of one), owner-only. Blocking; callers serialise writes."""
    folder = Path(path).resolve().parent
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{key}-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({key: value}, f, indent=1, sort_keys=True)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
