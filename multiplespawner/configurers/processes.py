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


def _wait_stopped(members, deadline: float) -> None:
    """Wait until each (pid, start time) is stopped by a signal or gone (or the deadline)."""
    def settled(pid, started):
        stat = _proc_stat(pid)
        return stat is None or stat[2] != started or stat[0] in ("T", "t", "Z", "X")

    while not all(settled(*m) for m in members) and time.monotonic() < deadline:
        time.sleep(0.01)


def _signal(members, sig) -> None:
    for pid, started in members:
        if _alive(pid, started):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def kill_process_tree(pid: int, started: int, wait: float = 5.0) -> None:
    """SIGKILL process ``pid`` (if it is still the one that started at ``started``) and all its
    descendants, and wait up to ``wait`` seconds until they are gone. Blocking.

    The tree is frozen first (SIGSTOP, level by level, until no new process appears), so
    nothing can fork between reading the tree and killing it: a killed parent's children would
    be re-parented and could no longer be found.
    """
    if not _alive(pid, started):
        return
    deadline = time.monotonic() + wait
    tree = [(pid, started)]
    for _ in range(10):
        _signal(tree, signal.SIGSTOP)
        _wait_stopped(tree, deadline)
        grown = process_tree(pid)
        if set(grown) <= set(tree):
            break
        tree = list(dict.fromkeys(tree + grown))
    _signal(tree, signal.SIGKILL)
    while any(_alive(*member) for member in tree) and time.monotonic() < deadline:
        time.sleep(0.05)
