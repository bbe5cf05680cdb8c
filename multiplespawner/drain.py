"""Drained pool hosts: a small JSON file the fleet service writes and the hub's pool reads.

``{"drained": {"HOST": {"by": "NAME", "time": "ISO 8601"}}}`` where HOST is a pool host's id
(``address:port``) or its address (then every port of it). The hub reads the file at every pool
claim (in a worker thread), so a drain takes effect on the next spawn and survives hub
restarts; running servers are not touched (``multiplespawner-servers drain --stop`` stops
them). Standard library only (and :mod:`.json_file`): both the hub and the fleet service import it.
"""

from __future__ import annotations

import os

from .json_file import read_document, utc_timestamp, write_document

#: longest host text accepted (an address or address:port)
MAX_HOST_LENGTH = 255


def read_drained(path: str | os.PathLike) -> dict[str, dict]:
    """HOST -> {by, time} of the drained hosts in ``path`` (blocking). A missing file drains
    nothing; an unreadable or malformed one raises ``ValueError`` (the pool then refuses
    spawns on it rather than ignoring a drain)."""
    return read_document(path, "drained", "the drain file")


def is_drained(drained: dict, host_id: str, address: str) -> bool:
    """Is the pool host ``host_id`` (``address:port``) drained, by id or by address?"""
    return host_id in drained or address in drained


def set_drained(path: str | os.PathLike, host: str, actor: str, drained: bool) -> dict[str, dict]:
    """Drain (or undrain) ``host`` in ``path``, written atomically (owner-only, replaced in
    one rename); return the drained hosts now. Blocking; callers serialise writes."""
    current = read_drained(path)
    if drained:
        current[host] = {"by": actor, "time": utc_timestamp()}
    else:
        current.pop(host, None)
    write_document(path, "drained", current)
    return current
