"""CloudSSHSpawner in a real JupyterHub, starting a real jupyterhub-singleuser behind real sshd.

Each "machine" is an OpenSSH sshd on its own 127.0.0.N; the notebook runs there as a fresh Unix
user, started over SSH. The hub reaches it only through the SSH tunnel.
"""

import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.procs import wait_until
from tests.fixtures.sshd import _socket_inodes, make_client_key

SINGLEUSER = "/opt/jupyterhub-multiplespawner/venv/bin/jupyterhub-singleuser"
# JupyterHub's stand-in single-user server, for tests about spawn mechanics, not the notebook
MOCKSU = [sys.executable, "-m", "jupyterhub.tests.mocksu"]


@dataclass
class Machine:
    """A Unix user on an sshd 'machine', with the hub config that spawns there."""

    user: str
    sshd: object
    key_path: Path
    known_hosts: Path

    def config(self, extra: str = "", hosts=None) -> str:
        hosts = hosts or [f"{self.sshd.host}:{self.sshd.port}"]
        return f"""
c.JupyterHub.spawner_class = "cloudssh"
c.CloudSSHSpawner.remote_hosts = {hosts!r}
c.CloudSSHSpawner.ssh_key_path = {str(self.key_path)!r}
c.CloudSSHSpawner.known_hosts = {str(self.known_hosts)!r}
c.CloudSSHSpawner.remote_python = "/usr/bin/python3"
c.CloudSSHSpawner.keepalive_interval = 2
c.CloudSSHSpawner.reconnect_max_delay = 2
c.CloudSSHSpawner.term_timeout = 5
c.Spawner.cmd = [{SINGLEUSER!r}]
c.Spawner.default_url = "/lab"
c.Spawner.poll_interval = 2
{extra}
"""


def user_processes(user: str) -> list[int]:
    """PIDs of processes running as ``user`` (a Unix user this test created)."""
    import pwd

    uid = pwd.getpwnam(user).pw_uid
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except FileNotFoundError:
                pass
    return pids


def tcp_listeners() -> list[tuple[str, int, str]]:
    """(local address in hex, port, socket inode) of every listening TCP socket, IPv4 and IPv6."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A":
                found.append((addr, int(port_hex, 16), fields[9]))
    return found


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP listener on ``port``."""
    return {addr for addr, p, _ in tcp_listeners() if p == port}


def listening_ports_of(pid: int) -> set[int]:
    """TCP ports process ``pid`` listens on."""
    inodes = _socket_inodes(pid)
    return {p for _, p, inode in tcp_listeners() if inode in inodes}


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def machine(unix_user, sshd_factory, tmp_path):
    user = unix_user("cs")
    sshd = sshd_factory()
    key_path, public = make_client_key(tmp_path)
    sshd.authorize(user, public)
    known_hosts = sshd.write_known_hosts(tmp_path / "known_hosts")
    m = Machine(user, sshd, key_path, known_hosts)
    yield m
    # whatever a test did, nothing may keep running as the user (remove_unix_user needs it)
    for pid in user_processes(user):
        os.kill(pid, signal.SIGKILL)


def state_of(hub, user, server_name=""):
    return hub.server_model(user, server_name)["state"]


def lab_answers(hub, user) -> bool:
    r = hub.server_request(user, "api/status", timeout=5)
    return r.status_code == 200 and "started" in r.json()


def readable_by_others(needle: bytes, *roots: Path) -> list[Path]:
    """Regular files under ``roots`` that contain ``needle`` and that other users can read: the
    file is world-readable and every directory above it world-searchable."""

    def reachable(path: Path) -> bool:
        return all(parent.stat().st_mode & 0o001 for parent in path.parents)

    found = []
    for root in roots:
        for path in root.rglob("*"):
            try:
                st = path.lstat()
                if path.is_file() and not path.is_symlink() and st.st_mode & 0o004 and reachable(path) \
                        and st.st_size < 16 * 1024 * 1024 and needle in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


def test_spawn_reach_lab_stop(machine, hub_factory):
    hub = hub_factory(machine.config())
    hub.create_user(machine.user)
    model = hub.spawn(machine.user)
    state = model["state"]
    assert state["host"] == machine.sshd.host and state["host_key"] == machine.sshd.host_key

    # the lab itself, through CHP -> SSH local forward -> notebook; the notebook checks the
    # token against the hub API through the remote forward
    r = hub.server_request(machine.user, "lab")
    assert r.status_code == 200 and "JupyterLab" in r.text
    assert lab_answers(hub, machine.user)

    # the notebook runs as the user, binds 127.0.0.1 only, and carries no token in argv
    pid = state["pid"]
    assert pid in user_processes(machine.user)
    assert listening_addresses(state["notebook_port"]) == {"0100007F"}
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    token = [v for v in environ.split(b"\0") if v.startswith(b"JUPYTERHUB_API_TOKEN=")][0].split(b"=", 1)[1]
    assert token and token not in cmdline
    assert token.decode() not in hub.log_text()
    assert f"JUPYTERHUB_API_URL=http://127.0.0.1:{state['api_port']}/hub/api".encode() in environ
    log = Path(f"/home/{machine.user}/.jupyterhub-cloudssh/default.log")
    assert log.stat().st_mode & 0o777 == 0o600 and log.parent.stat().st_mode & 0o777 == 0o700
    # no file other users can read holds the token (Jupyter's runtime files sit in a 0700 dir)
    assert readable_by_others(token, Path(f"/home/{machine.user}"), Path("/tmp"), Path("/var/tmp")) == []
    # one SSH connection carries both forwards and the commands
    assert len(machine.sshd.connections()) == 1

    hub.stop_server(machine.user)
    wait_until(lambda: not user_processes(machine.user), timeout=15, message="notebook gone")
    wait_until(lambda: not machine.sshd.connections(), timeout=10, message="tunnel closed")
    assert not port_open(state["local_port"])


def test_respawn_does_not_duplicate_tunnel(machine, hub_factory):
    hub = hub_factory(machine.config())
    hub.create_user(machine.user)
    first = hub.spawn(machine.user)["state"]
    hub.stop_server(machine.user)
    second = hub.spawn(machine.user)["state"]
    assert second["pid"] != first["pid"]
    assert lab_answers(hub, machine.user)
    assert len(machine.sshd.connections()) == 1
    assert not port_open(first["local_port"]) or first["local_port"] == second["local_port"]


def test_hub_restart_keeps_server_reachable_with_one_tunnel(machine, hub_factory):
    hub = hub_factory(machine.config())
    hub.create_user(machine.user)
    before = hub.spawn(machine.user)["state"]
    hub.restart()
    # after start-up the hub polled the spawner, which rebuilt the tunnel from state
    wait_until(lambda: lab_answers(hub, machine.user), timeout=30, message="lab answers after restart")
    model = hub.server_model(machine.user)
    assert model["ready"] and model["state"]["pid"] == before["pid"]
    assert model["state"]["local_port"] == before["local_port"]
    wait_until(lambda: len(machine.sshd.connections()) == 1, timeout=10, message="one tunnel")
    time.sleep(3)  # a few poll intervals later, still exactly one
    assert len(machine.sshd.connections()) == 1
    assert "re-established from state" in hub.log_text()

    # stopping after the restart works from state alone: the notebook and the tunnel are gone
    hub.stop_server(machine.user)
    wait_until(lambda: not user_processes(machine.user), timeout=15, message="notebook gone")
    wait_until(lambda: not machine.sshd.connections(), timeout=10, message="tunnel closed")
    assert not port_open(before["local_port"])
    assert "stopped (SIGTERM)" in hub.log_text()


def test_killed_ssh_connection_comes_back_within_10s(machine, hub_factory):
    hub = hub_factory(machine.config())
    hub.create_user(machine.user)
    hub.spawn(machine.user)
    [before] = machine.sshd.connections()
    killed_at = time.monotonic()
    assert machine.sshd.kill_connection() == 1
    # a start request polls the running server at once, inside the reconnect window: the
    # server is still running, so the hub refuses to start a second one
    again = hub.api("POST", f"/users/{machine.user}/server")
    assert again.status_code == 400 and "already running" in again.text, (again.status_code, again.text)

    def answers():
        try:
            return lab_answers(hub, machine.user)
        except Exception:
            return False

    wait_until(answers, timeout=10, interval=0.2, message="lab answers again")
    elapsed = time.monotonic() - killed_at
    [after] = machine.sshd.connections()
    assert after.peer_port != before.peer_port
    assert elapsed < 10
    assert hub.server_model(machine.user)["ready"]


@pytest.mark.parametrize("how", ["known_hosts", "pinned", "known_hosts-changed-with-tofu"])
def test_wrong_host_key_is_refused(machine, hub_factory, sshd_factory, tmp_path, how):
    impostor_key = sshd_factory().host_key  # any other machine's key
    if how.startswith("known_hosts"):
        (machine.known_hosts).write_text(f"[{machine.sshd.host}]:{machine.sshd.port} {impostor_key}\n")
        extra = "c.CloudSSHSpawner.trust_on_first_use = True" if how.endswith("tofu") else ""
    else:
        extra = f"c.CloudSSHSpawner.host_key = {impostor_key!r}"
    hub = hub_factory(machine.config(extra))
    hub.create_user(machine.user)
    r = hub.api("POST", f"/users/{machine.user}/server")
    assert r.status_code in (201, 202, 500)
    wait_until(lambda: hub.server_model(machine.user) is None, timeout=30, message="spawn failed")
    assert "Refusing to connect" in hub.log_text()
    assert "does not match" in hub.log_text()
    if how.endswith("tofu"):
        assert "the key changed (trust_on_first_use applies only to machines" in hub.log_text()
        assert "on first use" not in hub.log_text().replace("trust_on_first_use", "")
    assert not user_processes(machine.user)
    assert machine.sshd.connections() == []


def test_trust_on_first_use_pins_an_unknown_machine_in_state(machine, hub_factory, sshd_factory):
    # known_hosts lists another machine only: this one is unknown, so TOFU applies to it
    machine.known_hosts.write_text(sshd_factory().known_hosts_line() + "\n")
    hub = hub_factory(machine.config(
        f"c.CloudSSHSpawner.trust_on_first_use = True\nc.Spawner.cmd = {MOCKSU!r}"
    ))
    hub.create_user(machine.user)
    state = hub.spawn(machine.user)["state"]
    assert state["host_key"] == machine.sshd.host_key
    assert f"Trusting {machine.user}@{machine.sshd.host}:{machine.sshd.port} on first use" in hub.log_text()
    assert hub.server_request(machine.user, "x").status_code == 200
    hub.stop_server(machine.user)
    wait_until(lambda: not user_processes(machine.user), timeout=15, message="server gone")


def test_remote_process_killed_is_reported_by_poll(machine, hub_factory):
    hub = hub_factory(machine.config())
    hub.create_user(machine.user)
    state = hub.spawn(machine.user)["state"]
    os.kill(state["pid"], signal.SIGKILL)
    # the hub polls every 2 s; poll sees the process gone and the hub drops the server
    wait_until(lambda: hub.server_model(machine.user) is None, timeout=30, message="hub noticed")
    wait_until(lambda: not machine.sshd.connections(), timeout=10, message="tunnel closed")
    assert not port_open(state["local_port"])
    assert "has exited" in hub.log_text()


@pytest.mark.parametrize(
    "cmd",
    [
        ["/nonexistent/jupyterhub-singleuser"],  # launch fails on the machine
        ["/bin/sleep", "600"],  # starts, never answers: the hub's http_timeout stops it
    ],
    ids=["launch-fails", "never-answers"],
)
def test_stop_after_failed_start_leaves_nothing(machine, hub_factory, cmd):
    hub = hub_factory(machine.config(f"c.Spawner.cmd = {cmd!r}\nc.Spawner.http_timeout = 8"))
    hub.create_user(machine.user)
    hub.api("POST", f"/users/{machine.user}/server")
    wait_until(lambda: hub.server_model(machine.user) is None, timeout=60, message="spawn failed")
    wait_until(lambda: not user_processes(machine.user), timeout=15, message="no process left")
    wait_until(lambda: not machine.sshd.connections(), timeout=10, message="no tunnel left")
    # stopping again is harmless
    r = hub.api("DELETE", f"/users/{machine.user}/server")
    assert r.status_code in (204, 400, 404)


def test_unreachable_first_host_falls_back_to_next(machine, hub_factory, sshd_factory):
    dead = sshd_factory()
    dead.stop()
    hub = hub_factory(
        machine.config(hosts=[f"{dead.host}:{dead.port}", f"{machine.sshd.host}:{machine.sshd.port}"])
    )
    hub.create_user(machine.user)
    state = hub.spawn(machine.user)["state"]
    assert state["host"] == machine.sshd.host
    assert lab_answers(hub, machine.user)


def test_progress_events_reach_the_hub_event_stream(machine, hub_factory):
    """start()'s own events, as the spawn page receives them from the hub."""
    hub = hub_factory(machine.config(
        f"c.Spawner.cmd = {MOCKSU!r}\n"
        "c.JupyterHub.tornado_settings = {'slow_spawn_timeout': 0}  # POST answers while pending"
    ))
    hub.create_user(machine.user)
    r = hub.api("POST", f"/users/{machine.user}/server")
    assert r.status_code == 202, r.text
    events = []
    with hub.api("GET", f"/users/{machine.user}/server/progress", stream=True, timeout=120) as stream:
        assert stream.status_code == 200, stream.text
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if events[-1].get("ready") or events[-1].get("failed"):
                    break
    messages = [e["message"] for e in events]
    target = f"{machine.user}@{machine.sshd.host}:{machine.sshd.port}"
    ours = [m for m in messages if m.split(" ")[0] in ("Connecting", "Tunnel", "Starting", "Waiting")]
    assert [m.split(" ")[0] for m in ours] == ["Connecting", "Tunnel", "Starting", "Waiting"], messages
    assert ours[0] == f"Connecting to {target}"
    assert ours[1].startswith("Tunnel up: hub 127.0.0.1:") and f"{machine.sshd.host} 127.0.0.1:" in ours[1]
    assert events[-1].get("ready"), messages
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress)


def test_stop_kills_a_process_that_ignores_sigterm(machine, hub_factory):
    """SIGTERM first; a process still there term_timeout later gets SIGKILL; nothing is left."""
    ignores_term = ["/bin/sh", "-c", 'trap "" TERM; exec "$0" "$@"', *MOCKSU]
    hub = hub_factory(machine.config(
        f"c.Spawner.cmd = {ignores_term!r}\nc.CloudSSHSpawner.term_timeout = 3"
    ))
    hub.create_user(machine.user)
    state = hub.spawn(machine.user)["state"]
    status = Path(f"/proc/{state['pid']}/status").read_text()
    ignored = int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
    assert ignored & (1 << (signal.SIGTERM - 1)), "the test's server must ignore SIGTERM"

    started = time.monotonic()
    hub.stop_server(machine.user)
    took = time.monotonic() - started
    assert took >= 3, f"stopped after {took:.1f}s, before the grace period was over"
    log = hub.log_text()
    assert f"remote process {state['pid']} still running 3s after SIGTERM; sending SIGKILL" in log
    assert f"remote process {state['pid']} stopped (SIGKILL)" in log
    # (the sshd session of the closed tunnel runs as the user too, and exits a moment later)
    wait_until(lambda: not user_processes(machine.user), timeout=10, message="nothing left")
    wait_until(lambda: not machine.sshd.connections(), timeout=10, message="tunnel closed")
    assert not port_open(state["local_port"])


# The launcher, except that the answer of "launch" is held back until the hub hangs up: the
# process is started, but the hub never learns its pid (a stalled link, or a start timeout).
HELD_LAUNCH = """#!/bin/sh
/usr/bin/python3 "$@"
rc=$?
if [ "$3" = launch ]; then
    touch "$HOME/.launched"
    while echo held >&2; do sleep 0.5; done  # until the channel is gone
fi
exit $rc
"""


def test_start_cancelled_mid_launch_leaves_nothing(machine, hub_factory):
    wrapper = Path(f"/home/{machine.user}/held-launch")
    wrapper.write_text(HELD_LAUNCH)
    wrapper.chmod(0o755)
    hub = hub_factory(machine.config(
        f"c.Spawner.cmd = {MOCKSU!r}\n"
        f"c.CloudSSHSpawner.remote_python = {str(wrapper)!r}\n"
        "c.Spawner.start_timeout = 10"
    ))
    hub.create_user(machine.user)
    hub_ports = listening_ports_of(hub.process.pid)
    hub.api("POST", f"/users/{machine.user}/server")
    wait_until(lambda: hub.server_model(machine.user) is None, timeout=60, message="start timed out")
    assert Path(f"/home/{machine.user}/.launched").exists(), "the launch did not run before the timeout"
    log = hub.log_text()
    assert "failed to start in 10 seconds" in log
    assert "the interrupted launch had started remote process" in log
    r = hub.api("DELETE", f"/users/{machine.user}/server")
    assert r.status_code in (204, 400, 404)
    wait_until(lambda: not user_processes(machine.user), timeout=15, message="no remote process left")
    wait_until(lambda: not machine.sshd.connections(), timeout=10, message="no SSH connection left")
    assert listening_ports_of(hub.process.pid) == hub_ports  # no forward listener left in the hub
