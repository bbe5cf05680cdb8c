"""Finding and stopping orphaned local notebook processes (multiplespawner/children/local_orphans.py)
against real processes in /proc: this hub's marker, another hub's, none; PID reuse; an
environment the hub may not read; the size bound; who the sweeps stop and who they leave."""

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from tests.fixtures.procs import wait_until

from multiplespawner.children import local_orphans
from multiplespawner.children.local_orphans import (
    MARKER,
    Process,
    find_processes,
    read_environ,
    start_time_of,
    stop_process,
    sweep_before_start,
    sweep_unowned,
)

HUB = "http://127.0.0.1:1/hub/api/"  # no hub answers there: no real notebook carries it
OTHER_HUB = "http://127.0.0.1:2/hub/api/"
SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]
IGNORES_TERM = [sys.executable, "-c",
                "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(120)"]


@pytest.fixture
def start():
    """``start(user, server, hub=HUB, cmd=SLEEP, **env)``: a real process with a notebook's
    environment (no marker if ``hub`` is None); all are killed and reaped after the test."""
    procs = []

    def make(user, server="", hub=HUB, cmd=SLEEP, first=None):
        env = dict(first or {})
        env.update({"PATH": os.environ.get("PATH", ""), "JUPYTERHUB_USER": user,
                    "JUPYTERHUB_SERVER_NAME": server, "JUPYTERHUB_API_URL": hub or OTHER_HUB})
        if hub is not None:
            env[MARKER] = hub
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, start_new_session=True)
        procs.append(proc)
        if cmd is IGNORES_TERM:
            assert proc.stdout.readline() == b"ready\n"  # the handler is in place
        # Popen returns once exec has begun: the new environment shows a moment later
        wait_until(lambda: read_environ(proc.pid), timeout=5, interval=0.01, message="environment in /proc")
        return proc

    yield make
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


def found(user, server=""):
    return {p.pid: p for p in find_processes(HUB) if (p.user, p.server) == (user, server)}


def ended(proc, timeout=10.0) -> bool:
    try:
        proc.wait(timeout=timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


def test_only_processes_marked_for_this_hub_are_found(start):
    ours = start("ada", "lab")
    start("ada", "lab", hub=OTHER_HUB)  # another hub on the same host
    start("ada", "lab", hub=None)  # a batch job or SSH server on this host: JUPYTERHUB_* only
    hits = found("ada", "lab")
    assert list(hits) == [ours.pid]
    assert hits[ours.pid].start_time == start_time_of(ours.pid)


def test_the_environment_is_read_up_to_the_bound_without_a_cut_variable(start):
    proc = start("bob", first={"FILLER": "x" * 100_000})
    env = read_environ(proc.pid)
    assert env[b"JUPYTERHUB_USER"] == b"bob" and env[MARKER.encode()] == HUB.encode()
    cut = read_environ(proc.pid, limit=50_000)  # inside FILLER: the cut-off variable is dropped
    assert b"FILLER" not in cut and MARKER.encode() not in cut
    padded = start("bob", "padded", first={f"FILLER{i}": "x" * 100_000 for i in range(3)})
    assert padded.pid not in found("bob", "padded")  # its marker lies beyond ENVIRON_MAX_BYTES


def test_an_environment_the_hub_may_not_read_is_not_its_own(start):
    """Scanned by a process that dropped to ``nobody``: the root-owned process is not found."""
    proc = start("cyd")
    assert proc.pid in found("cyd")
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (runs in the forked child)
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            pids = [p.pid for p in find_processes(HUB)]
            os.write(write_end, json.dumps({"pids": pids, "readable": read_environ(proc.pid) is not None}).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        seen = json.loads(f.read())
    os.waitpid(child, 0)
    assert seen == {"pids": [], "readable": False}


def test_a_reused_pid_is_not_signalled(start):
    proc = start("dan")
    real = found("dan")[proc.pid]
    reused = Process(real.pid, real.start_time + 1, real.user, real.server)  # same PID, other process
    assert not stop_process(reused, timeout=1)
    assert proc.poll() is None
    assert stop_process(real, timeout=5)
    assert ended(proc) and proc.returncode == -signal.SIGTERM
    assert not stop_process(real, timeout=1)  # gone (a zombie of ours here): nothing to signal


def test_a_process_ignoring_sigterm_gets_sigkill_after_the_timeout(start):
    proc = start("eve", cmd=IGNORES_TERM)
    began = time.monotonic()
    assert stop_process(found("eve")[proc.pid], timeout=0.5)
    assert ended(proc) and proc.returncode == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - began < 5


def spawner_for(user, server):
    log = logging.getLogger("test_local_orphans")
    return SimpleNamespace(hub=SimpleNamespace(api_url=HUB), user=SimpleNamespace(name=user), name=server,
                           log=log, _log_name=f"{user}:{server}", _deprecated_db_session=None)


def test_the_sweep_before_a_start_stops_only_that_servers_orphans(start, monkeypatch):
    monkeypatch.setattr(local_orphans, "_STARTED_HERE", set())
    orphan, kept, sibling, foreign = (start("fay", "lab"), start("fay", "lab"), start("fay", "other"),
                                      start("fay", "lab", hub=OTHER_HUB))
    child = SimpleNamespace(environment={"A": "1"}, pid=kept.pid)  # the PID in the server's state
    stopped = asyncio.run(sweep_before_start(spawner_for("fay", "lab"), child))
    assert [p.pid for p in stopped] == [orphan.pid]
    assert ended(orphan)
    assert kept.poll() is None and sibling.poll() is None and foreign.poll() is None
    assert child.environment == {"A": "1", MARKER: HUB}  # the new notebook is marked too
    assert ("fay", "lab") in local_orphans._STARTED_HERE


def test_the_hub_start_sweep_leaves_stored_and_starting_servers(start, monkeypatch):
    running, orphan, starting, stale = (start("gus", "running"), start("gus", "orphan"),
                                        start("gus", "starting"), start("gus", "stale"))
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    monkeypatch.setattr(local_orphans, "_STARTED_HERE", {("gus", "starting")})
    monkeypatch.setattr(local_orphans, "stored_pids", lambda spawner: {
        ("gus", "running"): running.pid,  # a running server in the hub's state
        ("gus", "stale"): dead.pid,  # state names a process that is gone: owns nothing
    })
    stopped = asyncio.run(sweep_unowned(spawner_for("gus", "")))
    assert sorted(p.pid for p in stopped) == sorted([orphan.pid, stale.pid])
    assert ended(orphan) and ended(stale)
    assert running.poll() is None and starting.poll() is None
