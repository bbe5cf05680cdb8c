"""Fault injection against real services while a real hub runs servers (docs/reliability.md).

Each dependency is restarted, frozen (SIGSTOP, then SIGCONT) and stopped (connections refused)
through :mod:`tests.fixtures.faults`, and each cell checks what a running server and a new
spawn experience, that the hub keeps answering, and that nothing is left half-made. Services
are shared per module (one slapd, one hub); the tests run in file order and use their own
users. The last part checks that the processes the suite ships stop promptly.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.fixtures.editor import editor_hub_config, write_catalogue
from tests.fixtures.faults import hung, refusing, restart
from tests.fixtures.hub import VENV_BIN, Hub
from tests.integration.test_cloudssh_spawner import MOCKSU, machine  # noqa: F401 (fixture)
from tests.fixtures.net import free_port, wait_for_port
from tests.fixtures.procs import wait_until
from tests.fixtures.slapd import MOCK_SPAWNER_CONFIG, Slapd, ldap_hub_config, ldap_hub_env

#: the hub's LDAP waits in these cells (seconds): a hung directory fails a spawn after one
OPERATION_TIMEOUT = 2.0
CONNECT_TIMEOUT = 2.0
UNAVAILABLE = "user directory (LDAP) is not reachable"


@pytest.fixture(scope="module")
def directory():
    server = Slapd().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def ldap_hub(directory):
    """A hub with ldap_hooks as pre-spawn hook and one running server (``running``)."""
    hub = Hub(
        ldap_hub_config(operation_timeout=OPERATION_TIMEOUT, connect_timeout=CONNECT_TIMEOUT)
        + MOCK_SPAWNER_CONFIG,
        env=ldap_hub_env(directory),
    ).start()
    with kept_server(hub, lambda: spawn_new_user(hub, "running")):
        yield hub


@contextlib.contextmanager
def kept_server(hub, start_it):
    """For a module's shared hub: ``start_it()`` starts the server kept running through every
    fault; the hub's log tail is printed if anything in the block fails; the hub is removed
    after."""
    try:
        start_it()
        yield
    except BaseException:
        print(hub.log_tail(200), file=sys.stderr)
        raise
    finally:
        hub.remove()


def running_server_answers(hub) -> bool:
    r = hub.server_request("running", "probe")
    return r.status_code == 200 and r.text.endswith("/probe")


def spawn_new_user(hub, user, timeout=60):
    """Create ``user`` and start their server; raises with the hub log if it does not start."""
    hub.create_user(user)
    return hub.spawn(user, timeout=timeout)


def spawn_request(hub, user):
    hub.create_user(user)
    started = time.monotonic()
    r = hub.api("POST", f"/users/{user}/server", json={})
    return r, time.monotonic() - started


def assert_refused_cleanly(hub, user, r):
    assert r.status_code == 503, r.text
    assert UNAVAILABLE in r.json()["message"]
    assert hub.server_model(user) is None  # nothing half-made: no server, no pending spawn


def hub_latency_during(hub, action, direct=False):
    """Run ``action()`` while another thread asks the hub's API every 0.2 s (through the proxy,
    or on the hub's own port if ``direct``); return the action's result and the slowest answer
    the hub gave meanwhile (seconds)."""
    slowest, done = [0.0], threading.Event()
    url = f"http://127.0.0.1:{hub.hub_port}/hub/api/" if direct else f"{hub.api_url}/"

    def probe():
        while not done.is_set():
            started = time.monotonic()
            requests.get(url, timeout=30).raise_for_status()
            slowest[0] = max(slowest[0], time.monotonic() - started)
            done.wait(0.2)

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        result = action()
    finally:
        done.set()
        thread.join()
    return result, slowest[0]


def posix_uids(directory) -> list[int]:
    return [e["uidNumber"] for e in directory.entries("(objectClass=posixAccount)")]


# ---- slapd ------------------------------------------------------------------------------------
def test_slapd_restart(ldap_hub, directory):
    """Restarted between two spawns: the next spawn succeeds at once, the running server is
    untouched."""
    # two spawns at once leave two pooled connections for the restart to kill
    for user in ("before-restart-1", "before-restart-2"):
        ldap_hub.create_user(user)
        assert ldap_hub.api("POST", f"/users/{user}/server", json={}).status_code in (201, 202)
    for user in ("before-restart-1", "before-restart-2"):
        ldap_hub.wait_for_ready(user, timeout=60)
    took = restart(directory)
    print(f"slapd restart: back after {took:.2f} s")
    spawn_new_user(ldap_hub, "after-restart")  # raises with the hub log if refused
    assert running_server_answers(ldap_hub)
    assert "failed (DirectoryUnavailable)" not in ldap_hub.log_text()


def test_slapd_hung(ldap_hub, directory):
    """Frozen: the spawn fails after about one operation timeout with the directory's message,
    the hub answers everyone meanwhile, nothing is left; after SIGCONT the next spawn works."""
    with hung(directory):
        (r, waited), slowest = hub_latency_during(ldap_hub, lambda: spawn_request(ldap_hub, "during-hang"))
        assert_refused_cleanly(ldap_hub, "during-hang", r)
        assert OPERATION_TIMEOUT * 0.75 < waited < OPERATION_TIMEOUT + CONNECT_TIMEOUT + 5, waited
        assert slowest < 2.0, slowest  # the hub's loop stayed free (a blocked loop: >= 2 s)
        assert running_server_answers(ldap_hub)
    print(f"slapd hung: spawn refused after {waited:.2f} s, slowest hub API answer {slowest:.2f} s")
    assert "timed out" in ldap_hub.log_text()
    ldap_hub.spawn("during-hang", timeout=60)


def test_slapd_refusing(ldap_hub, directory):
    """Stopped: the spawn fails at once with the directory's message; the running server and
    the hub are fine; started again, the next spawn works."""
    with refusing(directory):
        (r, waited), slowest = hub_latency_during(ldap_hub, lambda: spawn_request(ldap_hub, "during-stop"))
        assert_refused_cleanly(ldap_hub, "during-stop", r)
        assert waited < CONNECT_TIMEOUT, waited  # refused, not waited for
        print(f"slapd stopped: spawn refused after {waited:.2f} s, slowest hub API answer {slowest:.2f} s")
        assert running_server_answers(ldap_hub)
    ldap_hub.spawn("during-stop", timeout=60)


def test_slapd_faults_leave_no_duplicate_uid_and_no_stray_server(ldap_hub, directory):
    uids = posix_uids(directory)
    expected = {"running", "before-restart-1", "before-restart-2", "after-restart", "during-hang", "during-stop"}
    assert len(uids) == len(set(uids)) == len(expected)
    servers = {u["name"] for u in ldap_hub.api("GET", "/users", params={"state": "active"}).json()}
    assert servers == expected


# ---- stopping promptly ------------------------------------------------------------------------
def sigint_ignored():  # runs in the child before exec: as in a hub started with `jupyterhub &`
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("signum, inherit_ignored_sigint", [
    (signal.SIGTERM, False),
    (signal.SIGINT, False),
    (signal.SIGINT, True),  # started by a hub that runs in the background of a shell script
], ids=["SIGTERM", "SIGINT", "SIGINT-inherited-ignored"])
@pytest.mark.parametrize("service, option, probe, answer", [
    ("editor", "--catalogue-dir", "templates/api/templates", 302),  # to the hub login: the service answers
    ("fleet", "--catalogue-path", "fleet/api/servers", 403),  # token-only: no token, a 403
])
def test_service_stops_within_a_second(tmp_path, signum, inherit_ignored_sigint, service, option, probe, answer):
    """The template editor and the fleet service (multiplespawner.service.ServiceApp) stop
    within a second of SIGTERM or SIGINT, with a keep-alive connection open."""
    catalogue = tmp_path / "catalogue"
    write_catalogue(catalogue)
    port = free_port()
    env = dict(
        os.environ,
        JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{port}",
        JUPYTERHUB_SERVICE_PREFIX=f"/services/{probe.split('/')[0]}/",
        JUPYTERHUB_API_URL="http://127.0.0.1:9/hub/api",  # never reached: no request is authenticated
        JUPYTERHUB_API_TOKEN="unused",
        JUPYTERHUB_CLIENT_ID="service-templates",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", f"multiplespawner.{service}", f"{option}={catalogue}"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=sigint_ignored if inherit_ignored_sigint else None,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=90, process=proc)
        with requests.Session() as client:  # an open keep-alive connection, as a proxy keeps
            r = client.get(f"http://127.0.0.1:{port}/services/{probe}", allow_redirects=False)
            assert r.status_code == answer
            started = time.monotonic()
            proc.send_signal(signum)
            returncode = proc.wait(timeout=30)
            stopped_in = time.monotonic() - started
        assert returncode == 0
        print(f"{service} {signal.Signals(signum).name}: exited after {stopped_in:.2f} s")
        assert stopped_in < 1.0, stopped_in
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_hub_with_every_part_stops_within_seconds(tmp_path, directory):
    """A hub with the editor service, MultipleSpawner and the LDAP hook, started with SIGINT
    ignored (as from a shell script in the background) and with a user's keep-alive connection
    open to the editor through the proxy, stops within 5 s of SIGTERM, the editor with it."""
    catalogue = tmp_path / "catalogue"
    write_catalogue(catalogue)
    wrapper = tmp_path / "bin"
    wrapper.mkdir()
    launcher = wrapper / "jupyterhub"
    launcher.write_text(f"#!/bin/sh\ntrap '' INT\nexec {VENV_BIN / 'jupyterhub'} \"$@\"\n")
    launcher.chmod(0o755)
    hub = Hub(editor_hub_config(catalogue) + ldap_hub_config(), env=ldap_hub_env(directory), venv_bin=wrapper)
    try:
        hub.start()
        editor = editor_port(hub)
        base = f"{hub.url}/services/templates/"
        wait_until(lambda: requests.get(base + "api/templates", timeout=5, allow_redirects=False).status_code == 302,
                   timeout=90, message="editor service up")
        hub.create_user("boss", groups=["admins"])
        token = hub.api("POST", "/users/boss/tokens", json={"note": "stop test"}).json()["token"]
        with requests.Session() as client:
            r = client.get(base + "api/templates", headers={"Authorization": f"token {token}"}, timeout=30)
            assert r.status_code == 200, r.text
            started = time.monotonic()
            hub.stop_process()
            stopped_in = time.monotonic() - started
        print(f"hub with every part: stopped {stopped_in:.2f} s after SIGTERM")
        assert stopped_in < 5.0, f"{stopped_in:.1f} s\n{hub.log_tail(60)}"
        with pytest.raises(TimeoutError):  # the editor went with the hub
            wait_for_port("127.0.0.1", editor, timeout=0.5)
    finally:
        hub.remove()




def editor_port(hub) -> int:
    """The port of the editor service in ``hub``'s config (from :func:`editor_hub_config`)."""
    return int(re.search(r'"url": "http://127\.0\.0\.1:(\d+)"', hub.config_path.read_text()).group(1))


# ---- configurable-http-proxy ----------------------------------------------------------------------
def test_proxy_killed_is_restarted_by_the_hub_and_routes_come_back(ldap_hub):
    """The proxy the hub started dies: the hub notices within its check interval (5 s), starts
    it again and restores the routes; the running server answers again and spawns work."""
    pid_file = ldap_hub.dir / "proxy.pid"
    old_pid = int(pid_file.read_text())
    started = time.monotonic()
    os.kill(old_pid, signal.SIGTERM)

    def back():
        try:
            return running_server_answers(ldap_hub)
        except requests.RequestException:
            return False

    wait_until(back, timeout=60, interval=0.2, message="running server reachable through a new proxy")
    recovered = time.monotonic() - started
    print(f"proxy killed: running server reachable again after {recovered:.2f} s")
    assert int(pid_file.read_text()) != old_pid
    assert "Proxy stopped with exit code" in ldap_hub.log_text()
    spawn_new_user(ldap_hub, "after-proxy-restart")



def direct_api(hub, method, path, **kwargs):
    """The hub's REST API on the hub's own port, not through the proxy (which a fault may freeze)."""
    kwargs.setdefault("timeout", 30)
    return requests.request(method, f"http://127.0.0.1:{hub.hub_port}/hub/api{path}",
                            headers={"Authorization": f"token {hub.token}"}, **kwargs)


#: how long the proxy stays frozen in its cell (seconds)
PROXY_HANG = 8.0


def test_proxy_hung_hub_answers_spawn_bounded_routes_back(ldap_hub):
    """The proxy the hub started is frozen (SIGSTOP) for 8 s: the hub's own API keeps answering
    at once; a spawn asked for meanwhile ends (ready or failed) within the hang plus the hub's
    30 s proxy-request budget; after SIGCONT the running server answers through the proxy again,
    the spawned server's route is there and the next spawn works."""
    pid = int((ldap_hub.dir / "proxy.pid").read_text())
    ldap_hub.create_user("during-proxy-hang")
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()

        def ask_and_wait_out_the_hang():
            r = direct_api(ldap_hub, "POST", "/users/during-proxy-hang/server", json={})
            asked = time.monotonic() - started
            time.sleep(max(0.0, PROXY_HANG - asked))
            return r, asked

        (r, asked), slowest = hub_latency_during(ldap_hub, ask_and_wait_out_the_hang, direct=True)
        assert r.status_code in (201, 202), r.text
        with pytest.raises(requests.Timeout):  # the proxy really is frozen
            requests.get(f"{ldap_hub.url}/hub/api/", timeout=1)
    finally:
        os.kill(pid, signal.SIGCONT)
    print(f"proxy hung: spawn request answered in {asked:.2f} s, slowest hub API answer {slowest:.2f} s")
    assert slowest < 2.0, slowest
    assert asked < 15, asked  # the hub answers a slow spawn after slow_spawn_timeout (10 s): 202

    def ended():
        model = direct_api(ldap_hub, "GET", "/users/during-proxy-hang").json()["servers"].get("")
        return model is None or not model["pending"]

    wait_until(ended, timeout=30 + 10, interval=0.2, message="spawn during the proxy hang ended")
    ended_after = time.monotonic() - started
    model = ldap_hub.server_model("during-proxy-hang")
    print(f"proxy hung: the spawn asked for during the hang ended {ended_after:.2f} s after it was asked "
          f"({'ready' if model else 'failed'})")
    assert ended_after < PROXY_HANG + 30 + 10, ended_after
    wait_until(lambda: running_server_answers(ldap_hub), timeout=10, message="running server through the proxy")
    routes = ldap_hub.api("GET", "/proxy").json()
    if model is not None:  # it completed: it is routed and answers
        assert "/user/during-proxy-hang/" in routes, routes
        assert ldap_hub.server_request("during-proxy-hang", "probe").status_code == 200
    else:
        assert "/user/during-proxy-hang/" not in routes, routes
    spawn_new_user(ldap_hub, "after-proxy-hang")


# ---- the hub itself -------------------------------------------------------------------------------
def test_hub_sigkilled_and_started_again_keeps_running_servers(ldap_hub):
    """The hub process is SIGKILLed (no clean-up at all) and started again: the running
    server keeps answering through the proxy meanwhile, the new hub takes it over from its
    database, and spawns work."""
    servers_before = {u["name"] for u in ldap_hub.api("GET", "/users", params={"state": "active"}).json()}
    killed = ldap_hub.process
    started = time.monotonic()
    os.kill(killed.pid, signal.SIGKILL)
    killed.proc.wait(timeout=10)
    assert running_server_answers(ldap_hub)  # the old proxy still routes while no hub runs
    ldap_hub.start()
    print(f"hub SIGKILLed: a new hub answered {time.monotonic() - started:.2f} s after the kill")
    killed.stop()  # its process group: nothing of it may be left (the new hub replaced its proxy)
    wait_until(lambda: running_server_answers(ldap_hub), timeout=30, message="running server through the new proxy")
    assert ldap_hub.server_model("running")["ready"]
    servers_after = {u["name"] for u in ldap_hub.api("GET", "/users", params={"state": "active"}).json()}
    assert servers_after == servers_before
    spawn_new_user(ldap_hub, "after-hub-kill")

# ---- a machine's sshd under a running CloudSSHSpawner server ------------------------------------
def test_machine_sshd_hung_stopped_restarted(machine, unix_user, hub_factory):
    """One machine (an sshd on its own 127.0.0.N) runs one user's server through the SSH tunnel.

    * listener hung (SIGSTOP; the running connection's own sshd processes keep serving): the
      running server keeps answering; a new spawn there fails after ``connect_timeout`` naming
      SSH; after SIGCONT it succeeds;
    * stopped (listener and connections gone): the running server is unreachable, a new spawn
      fails at once; started again, the tunnel comes back by itself and spawns work;
    * restarted: the same, with no wait in between.
    """
    newcomer = unix_user("cf")
    key_public = machine.key_path.with_suffix(".pub").read_text().strip()
    machine.sshd.authorize(newcomer, key_public)
    hub = hub_factory(machine.config(f"c.Spawner.cmd = {MOCKSU!r}\nc.CloudSSHSpawner.connect_timeout = 3"))
    for user in (machine.user, newcomer):
        hub.create_user(user)
    hub.spawn(machine.user, timeout=90)

    def answers():
        try:
            r = hub.server_request(machine.user, "probe", timeout=5)
            return r.status_code == 200 and r.text.endswith("/probe")
        except requests.RequestException:
            return False

    def spawn_fails():
        started = time.monotonic()
        r = hub.api("POST", f"/users/{newcomer}/server", json={})
        if r.status_code == 202:  # accepted, then failed while starting
            wait_until(lambda: hub.server_model(newcomer) is None or not hub.server_model(newcomer)["pending"],
                       timeout=60, message="spawn ended")
        else:
            assert r.status_code >= 400, r.text
        assert hub.server_model(newcomer) is None or not hub.server_model(newcomer)["ready"]
        return time.monotonic() - started

    with hung(machine.sshd):
        waited = spawn_fails()
        assert answers()
    print(f"sshd hung: new spawn failed after {waited:.2f} s; running server answered")
    assert waited < 3 + 10, waited  # one connect_timeout, not the hub's start_timeout
    assert "No machine could be reached over SSH" in hub.log_text()
    hub.spawn(newcomer, timeout=90)
    hub.stop_server(newcomer)

    with refusing(machine.sshd):
        assert not answers()
        waited = spawn_fails()
        print(f"sshd stopped: new spawn failed after {waited:.2f} s")
        assert waited < 10, waited
    started = time.monotonic()
    wait_until(answers, timeout=30, interval=0.2, message="running server reachable again")
    print(f"sshd started again: running server answered {time.monotonic() - started:.2f} s after sshd listened")

    restart(machine.sshd)
    started = time.monotonic()
    wait_until(answers, timeout=30, interval=0.2, message="running server reachable after restart")
    print(f"sshd restarted: running server answered {time.monotonic() - started:.2f} s after sshd listened")
    hub.spawn(newcomer, timeout=90)
    # one connection per server, no stale duplicates left from before the faults
    wait_until(lambda: len(machine.sshd.connections()) == 2, timeout=15,
               message=f"two SSH connections (have {machine.sshd.connections()})")
    assert answers()
