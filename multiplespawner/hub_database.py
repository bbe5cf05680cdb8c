"""Faster commits for the hub's own SQLite database, for ``c.JupyterHub.db_kwargs``.

JupyterHub talks to its database synchronously on its event loop, and with SQLite's defaults
(rollback journal, ``synchronous=FULL``) every commit waits for the disk to flush the file
twice. A class pressing *Start* at once makes hundreds of commits in a few seconds, and every
other request (the pages students are waiting on, the REST API) waits behind them: on this
project's reference machine a commit took 2.3 ms that way and 0.04 ms in write-ahead-log mode
with ``synchronous=NORMAL`` (docs/scale.md has the course-rush figures with and without it).

Use in ``jupyterhub_config.py``::

    from multiplespawner.hub_database import sqlite_wal_db_kwargs
    c.JupyterHub.db_kwargs = sqlite_wal_db_kwargs()

What it trades: in WAL mode with ``synchronous=NORMAL`` a committed transaction survives the
hub's process being killed (SIGKILL, OOM) but the last few commits may be lost if the whole
host loses power or crashes; the database is never corrupted. The file gets two companions
(``jupyterhub.sqlite-wal``, ``-shm``) that belong to it: back up or copy the database only
while the hub is stopped (a clean stop folds the log back into the file). Only SQLite
connections are affected; for PostgreSQL or MySQL the hub's ``db_url`` decides and this is
not needed.
"""

from __future__ import annotations

import sqlite3


class WalConnection(sqlite3.Connection):
    """A ``sqlite3`` connection that switches its database to write-ahead logging and
    ``synchronous=NORMAL`` when it opens (a no-op for ``:memory:``, which has no log)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.execute("PRAGMA journal_mode=WAL")
        self.execute("PRAGMA synchronous=NORMAL")


def sqlite_wal_db_kwargs() -> dict:
    """The ``c.JupyterHub.db_kwargs`` that open the hub's SQLite database through
    :class:`WalConnection`.

    JupyterHub passes these to SQLAlchemy's ``create_engine``, which passes ``connect_args``
    to ``sqlite3.connect``; ``check_same_thread=False`` is what JupyterHub itself sets for
    SQLite when ``db_kwargs`` has no ``connect_args``.
    """
    return {"connect_args": {"check_same_thread": False, "factory": WalConnection}}
