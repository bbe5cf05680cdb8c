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
from cloudsshspawner.spawner import check_loopback_args, parse_host


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
def run_raw(action: str, payload: dict, python=sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["/bin/sh", "-c", remote.command(python, action)], input=remote.request(payload),
        capture_output=True, text=True, timeout=30,
    )


def run_action(action: str, payload: dict, python=sys.executable) -> dict:
    out = run_raw(action, payload, python)
    assert out.returncode == 0, out.stderr
    return remote.parse(action, out.stdout)


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


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
    record = tmp_path / "logs" / "nb.log.launch"
    launched = run_action(
        "launch",
        {"argv": [sys.executable, "-c", "import os,time; print(os.environ['JUPYTERHUB_API_TOKEN'][:2]); time.sleep(60)"],
         "env": {"JUPYTERHUB_API_TOKEN": secret}, "log": str(log), "cwd": str(tmp_path),
         "record": str(record), "launch_id": "l1"},
    )
    pid = launched["pid"]
    try:
        assert launched["start"]
        assert os.getpgid(pid) == pid  # own session: signals reach the whole group
        assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert secret.encode() in Path(f"/proc/{pid}/environ").read_bytes()
        assert log.stat().st_mode & 0o777 == 0o600 and log.parent.stat().st_mode & 0o777 == 0o700
        assert record.stat().st_mode & 0o777 == 0o600 and secret not in record.read_text()
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
        kill_group(pid)


def test_launch_of_missing_command_fails_with_message(tmp_path):
    out = run_raw(
        "launch",
        {"argv": ["/nonexistent/x"], "env": {"T": "secret"}, "log": str(tmp_path / "l"),
         "record": str(tmp_path / "l.launch"), "launch_id": "l1"},
    )
    assert out.returncode != 0 and "/nonexistent/x" in out.stderr and "secret" not in out.stderr


def _launch_request(tmp_path, launch_id):
    return {"argv": ["/bin/sleep", "60"], "env": {}, "log": str(tmp_path / "nb.log"),
            "record": str(tmp_path / "nb.log.launch"), "launch_id": launch_id}


def test_claim_finds_the_process_a_lost_launch_started(tmp_path):
    launched = run_action("launch", _launch_request(tmp_path, "lost"))
    try:
        claim = {"record": str(tmp_path / "nb.log.launch"), "launch_id": "lost"}
        assert run_action("claim", claim) == {"pid": launched["pid"], "start": launched["start"]}
        assert run_action("status", launched) == {"alive": True}
    finally:
        kill_group(launched["pid"])


def test_claim_before_the_launch_arrives_stops_it_from_starting(tmp_path):
    claim = {"record": str(tmp_path / "nb.log.launch"), "launch_id": "late"}
    assert run_action("claim", claim) == {"pid": None}
    out = run_raw("launch", _launch_request(tmp_path, "late"))
    assert out.returncode != 0 and "cancelled before it started" in out.stderr
    assert not (tmp_path / "nb.log").exists()  # it stopped before opening anything
    # the next launch of the same server is not affected
    launched = run_action("launch", _launch_request(tmp_path, "next"))
    kill_group(launched["pid"])


def test_launch_waits_for_a_claim_holding_the_record(tmp_path):
    """The two actions exclude each other: a launch arriving mid-claim runs after it."""
    import fcntl

    record = tmp_path / "nb.log.launch"
    record.write_text(json.dumps({"cancelled": "held"}))
    with open(record) as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # as a claim in progress would
        launch = subprocess.Popen(
            ["/bin/sh", "-c", remote.command(sys.executable, "launch")], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        launch.stdin.write(remote.request(_launch_request(tmp_path, "held")))
        launch.stdin.close()
        time.sleep(1)
        assert launch.poll() is None  # blocked on the lock, nothing started yet
        assert not (tmp_path / "nb.log").exists()
    assert launch.wait(timeout=30) != 0
    assert "cancelled before it started" in launch.stderr.read()
    launch.stdout.close()
    launch.stderr.close()


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


@pytest.mark.parametrize(
    "args",
    [["--ip=0.0.0.0"], ["--ip", "0.0.0.0"], ["--ServerApp.ip=::"], ["--NotebookApp.ip=*"],
     ["--debug", "--SingleUserNotebookApp.ip=10.0.0.5"], ["--ip"]],
)
def test_args_that_move_the_notebook_off_loopback_are_refused(args):
    # refused before any connection is tried (remote_hosts is empty: that would be the next error)
    spawner = make_spawner(args=args)
    with pytest.raises(ValueError, match="must listen on 127.0.0.1 only"):
        asyncio.run(spawner.start())


@pytest.mark.parametrize(
    "args",
    [[], ["--ip=127.0.0.1"], ["--ip", "127.0.0.1"], ["--ServerApp.ip='127.0.0.1'"],
     ["--iopub_data_rate_limit=1e10", "--ipykernel-option=x"]],
)
def test_loopback_or_unrelated_args_are_accepted(args):
    check_loopback_args(args)
    with pytest.raises(RuntimeError, match="remote_hosts is empty"):
        asyncio.run(make_spawner(args=args).start())


class _DroppingTunnel:
    """A tunnel whose first ``failures`` status commands die with their connection (exit
    status None, no output), as when sshd's side drops while the command is on its way."""

    target = "alice@10.0.0.5:22"
    failure = None
    forward_problem = None

    def __init__(self, failures: int, connected: bool = True):
        self.failures, self.connected, self.runs = failures, connected, 0

    async def wait_connected(self, timeout):
        return self.connected

    async def run(self, command, stdin, timeout):
        self.runs += 1
        if self.runs <= self.failures:
            return SimpleNamespace(exit_status=None, stdout="", stderr="")
        return SimpleNamespace(exit_status=0, stdout=json.dumps({"alive": True}) + "\n", stderr="")

    async def close(self):
        self.connected = False


def _polled(tunnel, **config):
    spawner = make_spawner(**config)
    spawner.load_state({"host": "10.0.0.5", "ssh_port": 22, "host_key": "ssh-ed25519 AAAA", "pid": 42})
    spawner._tunnel = tunnel
    return asyncio.run(spawner.poll())


def test_poll_asks_again_when_the_connection_drops_under_the_status_command():
    tunnel = _DroppingTunnel(failures=2)
    assert _polled(tunnel, poll_reconnect_timeout=5) is None
    assert tunnel.runs == 3


def test_poll_reports_gone_once_the_reconnect_window_is_over():
    tunnel = _DroppingTunnel(failures=1000)
    assert _polled(tunnel, poll_reconnect_timeout=1) == 1
    assert 2 <= tunnel.runs <= 4  # asked every 0.5 s until the deadline, then gave up
