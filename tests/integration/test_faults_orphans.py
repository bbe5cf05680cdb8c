"""A hub SIGKILLed after a local notebook process started but before the hub stored its PID
(docs/reliability.md): the next hub stops the orphan when it starts, the user's next spawn
works, other users' running servers are untouched; an orphan that appears after the hub
started is stopped right before its server starts again.

The kill lands deterministically in that window: a test-only LocalProcessSpawner subclass
(written into the hub's ``PYTHONPATH`` here, not in the product) starts its notebook, writes
the PID where the test sees it, and never returns from ``start``.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

from multiplespawner.children.local_orphans import MARKER, Process, read_environ, start_time_of, stop_process
from tests.fixtures.procs import wait_until

MOCKSU = [sys.executable, "-m", "jupyterhub.tests.mocksu"]

HANGING_CHILD = '''
import asyncio
import os
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner


class StartsThenHangs(LocalProcessSpawner):
    """Starts the notebook, writes its PID to $ORPHAN_PID_DIR/<user>, never returns."""

    async def start(self):
        await super().start()
        Path(os.environ["ORPHAN_PID_DIR"], self.user.name).write_text(str(self.pid))
        await asyncio.Event().wait()
'''


def write_setup(folder):
    """The catalogue (a mock local template, and one whose start hangs) and the hanging class."""
    folder.chmod(0o755)
    (folder / "orphan_child.py").write_text(textwrap.dedent(HANGING_CHILD))
    (folder / "pids").mkdir()
    local = {"resource_type": "local", "providers": ["local"]}
    (folder / "catalogue.json").write_text(json.dumps({
        "deployments": {"local": [{"name": "hub-host", "provider": "local"}]},
        "templates": [
            {"name": "local-mock", **local,
             "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner", "kwargs": {"cmd": MOCKSU}}},
            {"name": "hangs", **local,
             "spawner": {"class": "orphan_child.StartsThenHangs", "kwargs": {"cmd": MOCKSU}}},
        ],
    }))


def process_of(pid: int) -> Process:
    env = read_environ(pid)
    return Process(pid, start_time_of(pid), env[b"JUPYTERHUB_USER"].decode(), env[b"JUPYTERHUB_SERVER_NAME"].decode())


def alive(process: Process) -> bool:
    return start_time_of(process.pid) == process.start_time


def fake_notebook(user: str, hub_url: str) -> subprocess.Popen:
    """A process with a local notebook's environment for ``user``'s default server."""
    env = {"PATH": os.environ["PATH"], "JUPYTERHUB_USER": user, "JUPYTERHUB_SERVER_NAME": "",
           "JUPYTERHUB_API_URL": hub_url, MARKER: hub_url}
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], env=env, start_new_session=True)
    wait_until(lambda: read_environ(proc.pid), timeout=5, interval=0.01, message="environment in /proc")
    return proc


def test_hub_sigkilled_mid_spawn_leaves_no_orphaned_process(hub_factory, unix_user, tmp_path):
    write_setup(tmp_path)
    hub = hub_factory(f"""
c.JupyterHub.spawner_class = "multiple"
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 1}}
c.MultipleSpawner.catalogue_paths = [{str(tmp_path / "catalogue.json")!r}]
c.MultipleSpawner.allowed_spawner_classes = ["jupyterhub.spawner.LocalProcessSpawner", "orphan_child.StartsThenHangs"]
c.MultipleSpawner.child_nice = 0  # at nice 19 a loaded CI machine can starve the mock server past http_timeout
""", env={"PYTHONPATH": str(tmp_path), "ORPHAN_PID_DIR": str(tmp_path / "pids")})
    running, lost, late = unix_user("or"), unix_user("ol"), unix_user("ot")
    for user in (running, lost, late):
        hub.create_user(user)
    hub.spawn(running, user_options={"template": "local-mock"})
    kept = process_of(hub.user(running)["servers"][""]["state"]["child_state"]["pid"])
    leftovers, foreign, stray = [], None, None
    try:
        r = hub.api("POST", f"/users/{lost}/server", json={"template": "hangs"})
        assert r.status_code == 202, r.text
        pid_file = tmp_path / "pids" / lost
        wait_until(pid_file.exists, timeout=60, message="the hanging child's notebook PID")
        orphan = process_of(int(pid_file.read_text()))
        leftovers.append(orphan)
        hub_url = read_environ(orphan.pid)[b"JUPYTERHUB_API_URL"].decode()
        assert read_environ(orphan.pid)[MARKER.encode()] == hub_url.encode()
        foreign = fake_notebook(lost, "http://127.0.0.1:9/hub/api/")  # another hub's, same user
        leftovers.append(process_of(foreign.pid))

        killed = hub.process
        os.kill(killed.pid, signal.SIGKILL)  # the PID of lost's notebook was never stored
        killed.proc.wait(timeout=10)
        assert alive(orphan)
        hub.start()
        killed.stop()  # its process group (the old proxy); the notebooks run in sessions of their own

        wait_until(lambda: not alive(orphan), timeout=30, message="orphan stopped by the starting hub")
        log = hub.log_text()
        assert f"Stopped orphaned notebook process {orphan.pid} of user {lost}, server '' (at hub start)" in log
        assert f"of user {running}," not in log  # nothing of the running server was stopped
        assert alive(kept)
        assert hub.server_model(running)["ready"]
        assert hub.server_request(running, "probe").status_code == 200
        assert foreign.poll() is None

        hub.spawn(lost, user_options={"template": "local-mock"})
        assert hub.server_request(lost, "probe").status_code == 200

        # an orphan the hub-start check could not see: stopped right before its server starts
        wait_until(lambda: "Orphaned notebook process check for hub" in hub.log_tail(400), timeout=30,
                   message="the hub-start check finished")
        stray = fake_notebook(late, hub_url)
        leftovers.append(process_of(stray.pid))
        hub.spawn(late, user_options={"template": "local-mock"})
        assert stray.wait(timeout=5) == -signal.SIGTERM
        assert f"Stopped orphaned notebook process {stray.pid} of user {late}, server '' (before its server's start)" \
            in hub.log_text()
        assert alive(kept) and foreign.poll() is None
    finally:
        for process in leftovers:
            stop_process(process, timeout=5)  # only if it is still that very process
        for proc in (foreign, stray):
            if proc is not None:
                proc.wait(timeout=10)
