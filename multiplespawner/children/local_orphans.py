"""Orphaned local notebook processes: found through their environment, stopped by PID.

A hub killed (SIGKILL, power loss) after LocalProcessSpawner started a notebook but before the
hub stored its PID leaves a process no server owns. Every notebook a local child starts
therefore carries :data:`MARKER` in its environment, set to the hub's API URL (what tells one
hub's processes from another hub's on the same host; a batch job or an SSH server on the same
host has ``JUPYTERHUB_*`` variables too, but no marker). A process is *this hub's server for
(user, server)* when its ``/proc/PID/environ`` holds the marker with this hub's API URL and
``JUPYTERHUB_USER``/``JUPYTERHUB_SERVER_NAME`` naming them; a process whose environment the hub
may not read is not its own. Whatever a notebook starts inherits that environment (kernels,
terminals, jobs it detached), so the whole group is treated alike.

Two sweeps stop such processes (SIGTERM, SIGKILL after :data:`TERM_TIMEOUT`, through a pidfd
opened and checked against the process's start time, so a reused PID is never signalled):

* :func:`sweep_before_start`, right before a local child starts a server: every process of
  this hub for that (user, server) but the PID in the server's stored state (JupyterHub starts
  a server only when it is not running, and never twice at once);
* :func:`sweep_once`, once per hub process (scheduled by the first MultipleSpawner, i.e. while
  the hub loads its servers at start-up): processes of this hub whose (user, server) has no
  live process in any server's stored state, except for servers a local child of this hub
  process began to start (their own sweep ran before their process existed, so anything of
  theirs is theirs).

/proc is read and processes are waited for in a worker thread, never on the event loop.
Imports nothing of the suite but :mod:`..metrics`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..metrics import ORPHAN_PROCESSES_STOPPED

#: environment variable naming the hub (its API URL) in every notebook a local child starts
MARKER = "MULTIPLESPAWNER_LOCAL_HUB"
#: at most this many bytes of a process's environment are read (a marker beyond them is missed)
ENVIRON_MAX_BYTES = 256 * 1024
#: seconds between SIGTERM and SIGKILL, and how long the SIGKILL is waited for
TERM_TIMEOUT = 5.0

#: (user, server) whose server a local child of this hub process began to start
_STARTED_HERE: set[tuple[str, str]] = set()
_SWEEP_TASK: asyncio.Task | None = None


@dataclass(frozen=True)
class Process:
    """One process of this hub's notebooks, as found in /proc."""

    pid: int
    start_time: int  #: clock ticks after boot (/proc/PID/stat field 22): PID + this is unique
    user: str
    server: str


def read_environ(pid: int, limit: int = ENVIRON_MAX_BYTES) -> dict[bytes, bytes] | None:
    """The first ``limit`` bytes of ``pid``'s environment as a dict (a variable cut off at the
    limit is dropped), or None if it cannot be read (gone, not ours to read, a kernel thread).
    The file is opened with ``O_NOFOLLOW``."""
    try:
        fd = os.open(f"/proc/{pid}/environ", os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        chunks, size = [], 0
        while size < limit:
            chunk = os.read(fd, limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    entries = data.split(b"\0")
    if size >= limit:
        entries = entries[:-1]  # possibly cut in the middle
    return dict(e.split(b"=", 1) for e in entries if b"=" in e)


def start_time_of(pid: int) -> int | None:
    """``pid``'s start time (clock ticks after boot), or None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rpartition(b")")[2].split()  # the command name may hold spaces and ")"
    if len(fields) < 20 or fields[0] == b"Z":
        return None
    return int(fields[19])


def find_processes(hub_url: str) -> list[Process]:
    """Every process whose environment marks it as a notebook of the hub at ``hub_url``
    (blocking: reads /proc)."""
    marker = hub_url.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        env = read_environ(pid)
        if not env or env.get(MARKER.encode()) != marker or b"JUPYTERHUB_USER" not in env:
            continue
        start_time = start_time_of(pid)
        if start_time is None:
            continue
        found.append(Process(pid, start_time, env[b"JUPYTERHUB_USER"].decode(errors="replace"),
                             env.get(b"JUPYTERHUB_SERVER_NAME", b"").decode(errors="replace")))
    return found


def _wait_for_exit(pidfd: int, timeout: float) -> bool:
    """Whether the process ended within ``timeout`` seconds (poll, not select: a busy hub's
    descriptors go past select's 1024)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def stop_process(process: Process, timeout: float = TERM_TIMEOUT) -> bool:
    """SIGTERM ``process``, SIGKILL it if it still runs after ``timeout`` seconds; True if it
    was signalled (False: it was gone already, or its PID now names another process).

    The signals go through a pidfd opened before the start time is checked again, so they can
    only reach the very process that was found (blocking: waits for the process to end).
    """
    try:
        pidfd = os.pidfd_open(process.pid)
    except ProcessLookupError:
        return False
    try:
        if start_time_of(process.pid) != process.start_time:
            return False  # ended, and the PID may belong to another process now
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        if not _wait_for_exit(pidfd, timeout):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            _wait_for_exit(pidfd, timeout)
        return True
    except ProcessLookupError:
        return True  # it ended between the check and a signal
    finally:
        os.close(pidfd)


def _stop_all(processes: list[Process], timeout: float) -> list[Process]:
    """Stop ``processes`` at once (blocking); return those that were signalled."""
    if not processes:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(processes))) as pool:
        results = list(pool.map(lambda p: stop_process(p, timeout), processes))
    return [p for p, stopped in zip(processes, results) if stopped]


def _log_stopped(log: logging.Logger, stopped: list[Process], when: str) -> None:
    for p in stopped:
        log.warning("Stopped orphaned notebook process %d of user %s, server %r (%s)",
                    p.pid, p.user, p.server, "at hub start" if when == "hub_start" else "before its server's start")
    ORPHAN_PROCESSES_STOPPED.labels(when=when).inc(len(stopped))


def stored_pids(spawner) -> dict[tuple[str, str], int]:
    """(user, server) -> the local child's PID in every server's state in the hub database."""
    db = getattr(spawner, "_deprecated_db_session", None)
    if db is None:
        return {}
    from jupyterhub import orm

    pids = {}
    # filtered here, not in SQL: a filter on JupyterHub's JSON column type warns (no cache key)
    for orm_spawner in db.query(orm.Spawner):
        pid = ((orm_spawner.state or {}).get("child_state") or {}).get("pid")
        if isinstance(pid, int) and pid > 0 and orm_spawner.user is not None:
            pids[(orm_spawner.user.name, orm_spawner.name)] = pid
    return pids


async def sweep_before_start(spawner, child) -> list[Process]:
    """Mark ``child``'s notebook for this hub, then stop every process of this hub for the
    server's (user, server) but the PID in ``child``'s state; return the stopped ones.

    Called right before ``child.start()``; the key is remembered first, so the hub-start sweep
    leaves this server's processes to this one. A sweep that fails is logged and the start goes
    on: an orphan costs memory, a failed start costs the user their server.
    """
    hub_url = spawner.hub.api_url
    child.environment = {**child.environment, MARKER: hub_url}
    key = (spawner.user.name, spawner.name)
    _STARTED_HERE.add(key)
    keep = getattr(child, "pid", 0)
    try:
        found = await asyncio.to_thread(find_processes, hub_url)
        orphans = [p for p in found if (p.user, p.server) == key and p.pid != keep]
        stopped = await asyncio.to_thread(_stop_all, orphans, TERM_TIMEOUT)
    except Exception as e:
        spawner.log.error("%s: orphaned notebook process check failed: %r", spawner._log_name, e)
        return []
    _log_stopped(spawner.log, stopped, "spawn")
    return stopped


def _live(pids: dict[tuple[str, str], int]) -> set[tuple[str, str]]:
    """The servers whose stored PID is a running process (blocking: reads /proc)."""
    return {key for key, pid in pids.items() if start_time_of(pid) is not None}


async def sweep_unowned(spawner) -> list[Process]:
    """Stop this hub's notebook processes that no server owns (see the module's docstring)."""
    hub_url = spawner.hub.api_url
    found = await asyncio.to_thread(find_processes, hub_url)
    pids = stored_pids(spawner)  # read after the scan: a server stored meanwhile is seen
    owned = await asyncio.to_thread(_live, pids)
    # decided on the loop, after the scan: a server whose start began before its process
    # could be in the scan is in _STARTED_HERE by now
    orphans = [p for p in found if (p.user, p.server) not in owned | _STARTED_HERE]
    stopped = await asyncio.to_thread(_stop_all, orphans, TERM_TIMEOUT)
    _log_stopped(spawner.log, stopped, "hub_start")
    spawner.log.info("Orphaned notebook process check for hub %s: %d found, %d stopped",
                     hub_url, len(found), len(stopped))
    return stopped


def sweep_once(spawner) -> asyncio.Task | None:
    """The one hub-start sweep of this hub process (scheduled at the first call on a running
    loop; None without one: the next MultipleSpawner schedules it). A sweep that failed as a
    whole is logged, not retried."""
    global _SWEEP_TASK
    if _SWEEP_TASK is None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return None

        async def sweep():
            try:
                await sweep_unowned(spawner)
            except Exception as e:
                spawner.log.error("Orphaned notebook process check failed: %r", e)

        _SWEEP_TASK = asyncio.ensure_future(sweep())
    return _SWEEP_TASK

