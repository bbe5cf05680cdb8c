"""bare_metal templates through MultipleSpawner in a real hub: a pool of real sshd "hosts".

Each pool host is an OpenSSH sshd on its own 127.0.0.N (tests/fixtures/sshd.py) with the pinned
host key from the deployment; the notebook is the real jupyterhub-singleuser of the project venv,
running as a fresh Unix user, reached only through CloudSSHSpawner's tunnel.
"""

import json

import pytest

from tests.fixtures.machines import NOTEBOOK_ENV, MachineCounter, hub_ca
from tests.fixtures.procs import wait_until
from tests.fixtures.sshd import make_client_key
from tests.integration.test_cloudssh_spawner import user_processes

SINGLEUSER = "/opt/jupyterhub-multiplespawner/venv/bin/jupyterhub-singleuser"


def pool_catalogue(hosts, key_path=None, template_extra=None) -> dict:
    """A pool of ``hosts`` ((host, capacity) pairs; host with .host, .port, .host_key).

    ``key_path``: the operator's key for the users on hosts prepared beforehand (the project
    venv's jupyterhub-singleuser runs there). None: the template's configurer prepares them.
    """
    kwargs = {"default_url": "/lab", "keepalive_interval": 2, "term_timeout": 5}
    if key_path is not None:
        kwargs.update(ssh_key_path=str(key_path), remote_python="/usr/bin/python3", cmd=[SINGLEUSER])
    return {
        "deployments": {
            "bare_metal": [{
                "name": "lab-pool",
                "provider": "pool",
                "hosts": [
                    {"address": h.host, "port": h.port, "host_key": h.host_key, "capacity": cap}
                    for h, cap in hosts
                ],
            }],
        },
        "templates": [{
            "name": "pool-lab",
            "display_name": "Lab on a pool host",
            "resource_type": "bare_metal",
            "providers": ["pool"],
            "spawner": {"class": "cloudsshspawner.CloudSSHSpawner", "kwargs": kwargs},
            **(template_extra or {}),
        }],
    }


def configured_pool_catalogue(host, authenticator="certificate", **variables) -> dict:
    """One pool host (capacity 2) that the template's AnsibleConfigurer prepares (the prepared
    image's environment at NOTEBOOK_ENV); the notebook user logs in with ``authenticator``."""
    return pool_catalogue([(host, 2)], template_extra={
        "authenticator": {"class": authenticator},
        "configurer": {"class": "ansible", "options": {
            "timeout": 600, "variables": {"notebook_env_path": NOTEBOOK_ENV, **variables}}},
    })


def hub_config(cat_file) -> str:
    return f"""
c.JupyterHub.spawner_class = "multiple"
c.MultipleSpawner.catalogue_paths = [{str(cat_file)!r}]
c.MultipleSpawner.catalogue_check_interval = 0
c.Spawner.poll_interval = 3
"""


@pytest.fixture
def pool(sshd_factory, unix_user, tmp_path):
    """One sshd host with capacity 1, three Unix users allowed on it with one operator key."""
    tmp_path.chmod(0o755)
    host = sshd_factory()
    key_path, public = make_client_key(tmp_path)
    users = [unix_user("bm") for _ in range(3)]
    for user in users:
        host.authorize(user, public)
    cat_file = tmp_path / "catalogue.json"
    cat_file.write_text(json.dumps(pool_catalogue([(host, 1)], key_path)))
    return host, users, cat_file, key_path


def lab_answers(hub, user) -> bool:
    r = hub.server_request(user, "api/status")
    return r.status_code == 200 and "started" in r.json()


def test_pool_capacity_and_return(pool, hub_factory):
    """A full pool refuses at once; stop returns the host. (The allocation surviving a hub
    restart, and a bare-metal session expiring after one: test_multiple_restart.py.)"""
    host, (alice, bob, _), cat_file, _ = pool
    hub = hub_factory(hub_config(cat_file))
    for user in (alice, bob):
        hub.create_user(user)

    model = hub.spawn(alice, timeout=180)
    state = model["state"]
    assert state["machine"]["kind"] == "pool"
    assert state["machine"]["machine"]["id"] == f"{host.host}:{host.port}"
    assert state["child_state"]["host"] == host.host
    assert state["child_state"]["host_key"] == host.host_key
    assert lab_answers(hub, alice)
    assert len(host.connections()) == 1

    # the pool is full: the second spawn is refused at once, with a message, nothing started
    r = hub.api("POST", f"/users/{bob}/server", json={})
    assert r.status_code == 503, r.text
    assert "All 1 hosts of 'lab-pool' are in use" in r.json()["message"]
    assert hub.server_model(bob) is None and user_processes(bob) == []

    # stop returns the host: bob gets it
    hub.stop_server(alice)
    wait_until(lambda: user_processes(alice) == [], timeout=30, message="alice's notebook gone")
    assert host.connections() == []
    hub.spawn(bob, timeout=180)
    assert lab_answers(hub, bob)
    hub.stop_server(bob)
    wait_until(lambda: host.connections() == [], timeout=30, message="no SSH connection left")


def test_two_hosts_share_the_load(sshd_factory, unix_user, hub_factory, tmp_path):
    """Claims go to the first host with room; a spawn in progress holds its claim too."""
    tmp_path.chmod(0o755)
    hosts = [sshd_factory(), sshd_factory()]
    key_path, public = make_client_key(tmp_path)
    users = [unix_user("bm") for _ in range(3)]
    for h in hosts:
        for user in users:
            h.authorize(user, public)
    cat_file = tmp_path / "catalogue.json"
    cat_file.write_text(json.dumps(pool_catalogue([(hosts[0], 1), (hosts[1], 1)], key_path)))
    hub = hub_factory(hub_config(cat_file))
    for user in users:
        hub.create_user(user)
    # two spawns at once: each gets its own host
    for user in users[:2]:
        assert hub.api("POST", f"/users/{user}/server", json={}).status_code in (201, 202)
    models = [hub.wait_for_ready(user, timeout=180) for user in users[:2]]
    used = sorted(m["state"]["machine"]["machine"]["id"] for m in models)
    assert used == sorted(f"{h.host}:{h.port}" for h in hosts)
    r = hub.api("POST", f"/users/{users[2]}/server", json={})
    assert r.status_code == 503 and "All 2 hosts" in r.json()["message"]
    for user in users[:2]:
        hub.stop_server(user)


def test_a_configured_pool_host_skips_ansible_when_nothing_changed(configurable_pool_host, hub_factory, tmp_path):
    """A pool host the hub configures (certificate logins: nothing per spawn reaches the host):
    the second spawn skips Ansible, a changed variable runs it again, and after a hub restart
    the hash recorded in a running server's state still counts."""
    host, user = configurable_pool_host, "alice"
    ca_file, _ = hub_ca(tmp_path)
    cat_file = tmp_path / "catalogue.json"

    def write_catalogue(**variables):
        cat_file.write_text(json.dumps(configured_pool_catalogue(host, **variables)))

    write_catalogue()
    hub = hub_factory(hub_config(cat_file) + f"""
c.JupyterHub.allow_named_servers = True
c.CredentialStore.ca_key_file = {str(ca_file)!r}
c.MachineOrchestrator.pool_admin_key_file = {str(host.admin_key)!r}
""")
    hub.create_user(user)

    def nothing_left() -> dict:  # per-server keys, tunnels, Ansible's ssh processes (no machines here)
        return MachineCounter.of_hub(None, "-", hub).wait_for_nothing_left()

    def spawn(server_name=""):
        """Spawn; return (Ansible task lines, "already configured" lines) this spawn logged."""
        before = hub.log_text()
        model = hub.spawn(user, server_name, timeout=600)
        assert model["state"]["machine"]["kind"] == "pool"
        wait_until(lambda: hub.server_request(user, "api/status", server_name).status_code == 200,
                   timeout=60, message="lab answers")
        new = hub.log_text()[len(before):]  # the logs only grow (a restart adds a file)
        return new.count(": Configuring: TASK ["), new.count(": Machine already configured")

    tasks, skipped = spawn()
    assert tasks > 5 and skipped == 0  # the first spawn configures the host
    hub.stop_server(user)
    assert nothing_left() == {}

    assert spawn() == (0, 1)  # same host, playbooks and variables: Ansible does not run
    hub.stop_server(user)

    write_catalogue(notebook_user_shell="/bin/sh")  # the catalogue is re-read at the next spawn
    tasks, skipped = spawn()
    assert tasks > 5 and skipped == 0
    code, out = host.container.exec_run(["getent", "passwd", user])
    assert out.decode().strip().endswith(":/bin/sh"), out

    # the hub restarts with that server running: its state holds the host's hash
    hub.restart()
    wait_until(lambda: hub.server_request(user, "api/status").status_code == 200, timeout=90,
               message="lab after the restart")
    assert spawn("second") == (0, 1)
    hub.stop_server(user, "second")
    hub.stop_server(user)
    assert nothing_left() == {}
