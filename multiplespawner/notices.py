"""Notices to users: a small JSON file the fleet service writes and the hub's pages show.

``{"notices": {"ID": {"message": TEXT, "users": [NAME, ...], "servers": ["user/name", ...],
"by": NAME, "time": "ISO 8601", "until": UNIX_TIME}}}``. The hub shows a user every notice
naming them, until it expires, as JupyterHub's ``announcement`` (the banner on the home page,
the spawn and spawn-pending pages, the token page: every page built on ``page.html``)::

    from multiplespawner.notices import NoticeBoard
    c.JupyterHub.template_vars = {"announcement": NoticeBoard("/srv/jupyterhub/notices.json")}

JupyterHub calls the board with the page's user when it renders a page. The board answers from
memory and re-reads the file in a worker thread at most every ``refresh`` seconds, so a page
never waits on the disk and a new notice shows within that time. JupyterHub inserts the
announcement as HTML: messages are escaped here, so a notice is text, never markup. Standard
library only: the hub and the fleet service import it.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import secrets
import time

from .json_file import read_document, utc_timestamp, write_document

#: longest notice text
MAX_MESSAGE = 500


def read_notices(path: str | os.PathLike) -> dict[str, dict]:
    """ID -> notice (blocking); ``ValueError`` if the file is unreadable."""
    return read_document(path, "notices", "the notice file")


def add_notice(path: str | os.PathLike, message: str, servers: list[str], by: str, until: float) -> str:
    """Record a notice for the users of ``servers`` until ``until`` (Unix time), written
    atomically; expired notices are dropped. Returns its id. Blocking; callers serialise writes."""
    now = time.time()
    current = {i: n for i, n in read_notices(path).items()
               if isinstance(n, dict) and isinstance(n.get("until"), (int, float)) and n["until"] > now}
    notice_id = f"{int(now)}-{secrets.token_hex(3)}"
    current[notice_id] = {"message": message, "servers": sorted(servers),
                          "users": sorted({s.split("/", 1)[0] for s in servers}), "by": by,
                          "time": utc_timestamp(now), "until": until}
    write_document(path, "notices", current)
    return notice_id


def notices_html(notices: dict, user_name: str, now: float) -> str:
    """The unexpired notices naming ``user_name``, oldest first, as escaped HTML ('' if none)."""
    mine = sorted((n for n in notices.values()
                   if isinstance(n, dict) and user_name in (n.get("users") or ())
                   and isinstance(n.get("until"), (int, float)) and n["until"] > now),
                  key=lambda n: str(n.get("time")))
    return "<br>".join(html.escape(str(n.get("message", ""))) for n in mine)


class NoticeBoard:
    """A ``c.JupyterHub.template_vars`` value: ``board(user)`` is that user's notices as HTML.

    ``path``: the fleet service's ``--FleetApp.notice_file``. ``refresh``: at most how often
    (seconds) the file is read again. An unreadable file shows nothing (and is logged once per
    read)."""

    def __init__(self, path: str | os.PathLike, refresh: float = 5.0):
        self.path = path
        self.refresh = refresh
        self._notices: dict = {}
        self._read_at = float("-inf")
        self._reading: asyncio.Future | None = None

    def __call__(self, user) -> str:
        self._refresh_soon()
        if user is None:
            return ""
        return notices_html(self._notices, user.name, time.time())

    def _refresh_soon(self) -> None:
        if self._reading is not None or time.monotonic() - self._read_at < self.refresh:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._read_at = time.monotonic()
        self._reading = asyncio.ensure_future(self._read(loop))

    async def _read(self, loop) -> None:
        try:
            self._notices = await loop.run_in_executor(None, read_notices, self.path)
        except ValueError as e:
            logging.getLogger("JupyterHub").error("%s; no notices shown", e)
            self._notices = {}
        finally:
            self._reading = None
