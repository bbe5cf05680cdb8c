"""CloudSSHSpawner pieces that need no SSH server: the launcher program, state, env, progress."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from traitlets import TraitError

from cloudsshspawner import CloudSSHSpawner, remote
from cloudsshspawner.spawner import parse_host


# -- host parsing ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "entry, expected",
    [
        ("vm1.example.org", ("vm1.example.org", 22)),
        ("10.0.0.5:2222", ("10.0.0.5", 2222)),
        ("[2001:db8::1]:2200", ("2001:db8::1", 2200)),
        ("[2001:db8::1]", ("2001:db8::1", 22)),
        ("2001:db8::1", ("2001:db8::1", 22)),
        ("  host  ", ("host", 22)),
    ],
)
def test_parse_host(entry, expected):
    assert parse_host(entry, 22) == expected


# -- the launcher, run here with the local interpreter instead of over SSH --------------------
def run_action(action: str, payload: dict, python=sys.executable) -> dict:
    cmd = remote.command(python, action)
    out = subprocess.run(
        ["/bin/sh", "-c", cmd], input=remote.request(payload), capture_output=True, text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return remote.parse(action, out.stdout)


def test_command_quotes_interpreter_and_source():
    cmd = remote.command("/usr/bin/env python3", "status")
    assert cmd.startswith("/usr/bin/env python3 -c '")
    assert cmd.endswith(" status")


def test_port_action_returns_a_free_loopback_port():
    port = run_action("port", {})["port"]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free again after the launcher released it


def test_launch_status_signal_keep_secrets_off_argv(tmp_path):
    secret = "s3cr3t-token-value"
    log = tmp_path / "logs" / "nb.log"
    launched = run_action(
        "launch",
        {"argv": [sys.executable, "-c", "import os,time; print(os.environ['JUPYTERHUB_API_TOKEN'][:2]); time.sleep(60)"],
         "env": {"JUPYTERHUB_API_TOKEN": secret}, "log": str(log), "cwd": str(tmp_path)},
    )
    pid = launched["pid"]
    try:
        assert launched["start"]
        assert os.getpgid(pid) == pid  # own session: signals reach the whole group
        assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert secret.encode() in Path(f"/proc/{pid}/environ").read_bytes()
        assert log.stat().st_mode & 0o777 == 0o600 and log.parent.stat().st_mode & 0o777 == 0o700
        target = {"pid": pid, "start": launched["start"]}
        assert run_action("status", target) == {"alive": True}
        # a recycled PID (other start time) is not our process: never signalled
        assert run_action("status", {"pid": pid, "start": "1"}) == {"alive": False}
        assert run_action("signal", {"pid": pid, "start": "1", "signal": "SIGTERM"}) == {"alive": False}
        assert run_action("status", target) == {"alive": True}
        assert run_action("signal", {**target, "signal": "SIGTERM"}) == {"alive": True}
        deadline = time.monotonic() + 10
        while run_action("status", target)["alive"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert log.read_text().strip() == "s3"
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_launch_of_missing_command_fails_with_message(tmp_path):
    out = subprocess.run(
        ["/bin/sh", "-c", remote.command(sys.executable, "launch")],
        input=json.dumps({"argv": ["/nonexistent/x"], "env": {"T": "secret"}, "log": str(tmp_path / "l")}),
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode != 0 and "/nonexistent/x" in out.stderr and "secret" not in out.stderr


def test_status_of_a_gone_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    assert run_action("status", {"pid": p.pid, "start": None}) == {"alive": False}


# -- the spawner without a hub ----------------------------------------------------------------
def make_spawner(**config):
    user = SimpleNamespace(
        name="alice", escaped_name="alice", url="/user/alice/", progress_url=lambda name: "",
    )
    hub = SimpleNamespace(
        api_url="http://127.0.0.1:8081/hub/api/", public_host="", base_url="/hub/",
    )
    return CloudSSHSpawner(user=user, hub=hub, _deprecated_db_session=None, **config)


def test_state_round_trip_and_clear():
    spawner = make_spawner()
    state = {
        "host": "10.0.0.5", "ssh_port": 22, "username": "alice", "host_key": "ssh-ed25519 AAAA",
        "local_port": 40001, "notebook_port": 50001, "api_port": 50002, "pid": 1234,
        "pid_start": "998877",
    }
    spawner.load_state(state)
    assert {k: v for k, v in spawner.get_state().items() if k in state} == state
    json.dumps(spawner.get_state())  # JSON, as the hub stores it
    assert asyncio.run(spawner.get_url()) == "http://127.0.0.1:40001"
    spawner.clear_state()
    assert not set(state) & set(spawner.get_state())


def test_poll_without_state_is_stopped_and_stop_is_a_no_op():
    spawner = make_spawner()
    assert asyncio.run(spawner.poll()) == 0
    asyncio.run(spawner.stop())
    asyncio.run(spawner.stop())


def test_env_points_the_notebook_at_the_remote_forward():
    spawner = make_spawner()
    spawner.api_token = "tok"
    spawner.remote_state = {"api_port": 45000}
    spawner.ip, spawner.port = "127.0.0.1", 51000
    env = spawner.get_env()
    assert env["JUPYTERHUB_API_URL"] == "http://127.0.0.1:45000/hub/api/"
    assert env["JUPYTERHUB_ACTIVITY_URL"] == "http://127.0.0.1:45000/hub/api/users/alice/activity"
    assert env["JUPYTERHUB_SERVICE_URL"].startswith("http://127.0.0.1:51000/")


def test_templating_of_user_and_paths():
    spawner = make_spawner(
        remote_username="u-{username}", ssh_key_path="/keys/{username}/id", ssh_certificate_path="/keys/{username}/id-cert.pub",
        known_hosts="/etc/ssh/known_hosts",
    )
    t = spawner._target("h", 22, "")
    assert (t.username, t.key_path, t.certificate_path) == ("u-alice", "/keys/alice/id", "/keys/alice/id-cert.pub")
    assert spawner.format_string(spawner.remote_log_path) == "~/.jupyterhub-cloudssh/default.log"


def test_relative_log_path_is_rejected():
    with pytest.raises(TraitError):
        make_spawner(remote_log_path="logs/nb.log")


@pytest.mark.parametrize(
    "config, message",
    [({}, "remote_hosts is empty"), ({"remote_hosts": ["h"]}, "ssh_key_path is not set")],
)
def test_start_without_hosts_or_key_explains(config, message):
    spawner = make_spawner(**config)
    with pytest.raises(RuntimeError, match=message):
        asyncio.run(spawner.start())
    assert spawner.get_state().get("pid") is None


def test_progress_streams_events_until_start_is_done():
    spawner = make_spawner()

    async def scenario():
        events = []

        async def consume():
            async for event in spawner.progress():
                events.append(event["message"])

        consumer = asyncio.create_task(consume())
        spawner._progress(10, "Connecting")
        await asyncio.sleep(0.05)
        spawner._progress(40, "Tunnel up")
        spawner._events_done = True
        spawner._events_changed.set()
        await asyncio.wait_for(consumer, 5)
        return events

    assert asyncio.run(scenario()) == ["Connecting", "Tunnel up"]
