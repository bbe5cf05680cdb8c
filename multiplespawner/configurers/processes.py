"""Stopping a process and everything it started, on Linux, without hitting a reused PID.

``ansible-playbook`` forks a worker per task and each worker calls ``setsid()``, so killing
the playbook's process group leaves the workers (and the commands they run) behind. These
helpers read the process tree from ``/proc`` and recognise processes by (PID, start time).
Elsewhere than Linux they find nothing and do nothing.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a Linux process, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


def process_start_time(pid: int) -> int | None:
    """The start time of a live process (to recognise it later despite PID reuse)."""
    stat = _proc_stat(pid)
    return stat[2] if stat is not None else None


def process_tree(pid: int) -> list[tuple[int, int]]:
    """``pid`` and all its descendants as (pid, start time) pairs, from /proc (empty elsewhere)."""
    stats = {}
    for entry in Path("/proc").glob("[0-9]*"):
        stat = _proc_stat(int(entry.name))
        if stat is not None:
            stats[int(entry.name)] = stat
    if pid not in stats:
        return []
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append((current, stats[current][2]))
        todo.extend(child for child, (_, ppid, _) in stats.items() if ppid == current)
    return tree


def _alive(pid: int, started: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[2] == started and stat[0] != "Z"


def kill_process_tree(pid: int, started: int, wait: float = 5.0) -> None:
    """SIGKILL process ``pid`` (if it is still the one that started at ``started``) and all its
    descendants, and wait up to ``wait`` seconds until they are gone. Blocking.

    The process is stopped first, so it cannot fork while its tree is read.
    """
    if not _alive(pid, started):
        return
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return
    tree = process_tree(pid)
    for member, member_started in tree:
        if _alive(member, member_started):
            try:
                os.kill(member, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + wait
    while any(_alive(*member) for member in tree) and time.monotonic() < deadline:
        time.sleep(0.05)
