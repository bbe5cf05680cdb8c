"""Session extensions: a small JSON file the fleet service writes and MultipleSpawner reads.

``{"extended": {"USER/NAME": {"session": DEADLINE, "deadline": NEW, "by": "NAME", "time":
"ISO 8601"}}}``: the server ``USER/NAME`` (NAME empty for the default server) whose session was
to end at ``DEADLINE`` (Unix time, exactly as its spawner state records it) now ends at ``NEW``.

Why a file and not the spawner's state: the deadline lives in the hub process (a timer set at
start, the deadline in the server's spawner state), and the hub's REST API cannot change a
spawner's state. The hub reads this file only when a session's deadline has passed (in a
worker thread), so an extension costs the hub nothing until then; since the spawner state
keeps the original deadline and this file the new one, an extension survives a hub restart
(the restarted hub finds the deadline passed, reads the file and waits on). ``session`` ties an
extension to one session: the server's next start has another deadline, so an old extension
never lengthens a new session. Standard library only: the hub and the fleet service import it.
"""

from __future__ import annotations

import os
import time

from .json_file import read_document, utc_timestamp, write_document


def read_extensions(path: str | os.PathLike) -> dict[str, dict]:
    """SERVER -> {session, deadline, by, time} (blocking); ``ValueError`` if unreadable."""
    return read_document(path, "extended", "the session extension file")


def extended_deadline(extensions: dict, server: str, session: float) -> float | None:
    """The deadline ``server``'s session (originally ending at ``session``) was extended to,
    or None if it was not."""
    entry = extensions.get(server)
    if not isinstance(entry, dict) or entry.get("session") != session:
        return None
    deadline = entry.get("deadline")
    return float(deadline) if isinstance(deadline, (int, float)) and not isinstance(deadline, bool) else None


def set_extension(path: str | os.PathLike, server: str, session: float, deadline: float, actor: str) -> dict:
    """Record that ``server``'s session (originally ending at ``session``) ends at ``deadline``,
    written atomically; entries whose deadline passed more than a day ago are dropped. Returns
    the entry. Blocking; callers serialise writes."""
    now = time.time()
    current = {s: e for s, e in read_extensions(path).items()
               if isinstance(e, dict) and isinstance(e.get("deadline"), (int, float)) and e["deadline"] > now - 86400}
    current[server] = {"session": session, "deadline": deadline, "by": actor,
                       "time": utc_timestamp()}
    write_document(path, "extended", current)
    return current[server]
