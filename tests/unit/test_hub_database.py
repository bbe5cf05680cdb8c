"""multiplespawner.hub_database: JupyterHub's own engine factory, given the kwargs, opens its
SQLite file in write-ahead-log mode with synchronous=NORMAL, and the hub's tables work."""

import sqlite3

from jupyterhub import orm
from sqlalchemy import text

from multiplespawner.hub_database import sqlite_wal_db_kwargs

SYNCHRONOUS_NORMAL = 1


def test_the_hub_database_opens_in_wal_mode_with_normal_sync(tmp_path):
    path = tmp_path / "jupyterhub.sqlite"
    session = orm.new_session_factory(f"sqlite:///{path}", **sqlite_wal_db_kwargs())()
    session.add(orm.User(name="alice"))
    session.commit()
    assert session.execute(text("PRAGMA synchronous")).scalar() == SYNCHRONOUS_NORMAL
    # the journal mode is the file's: another connection sees it, and sees the committed row
    other = sqlite3.connect(path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("SELECT name FROM users").fetchall() == [("alice",)]
    finally:
        other.close()
    session.close()


def test_without_the_kwargs_jupyterhub_keeps_sqlites_rollback_journal(tmp_path):
    """The reference: the mode above is the kwargs' doing, not JupyterHub's default."""
    path = tmp_path / "jupyterhub.sqlite"
    orm.new_session_factory(f"sqlite:///{path}")().close()
    other = sqlite3.connect(path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        other.close()
