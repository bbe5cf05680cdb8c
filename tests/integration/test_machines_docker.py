"""Container machines through a real hub: DockerProvider -> AnsibleConfigurer -> CloudSSHSpawner.

A ``virtual_machine`` template on the ``docker`` provider: the hub creates a container of the
prepared ssh-machine image (notebook environment baked in, tests/fixtures/machines.py) with a
per-server key and host key, waits for sshd with the pinned key, runs the shipped playbooks
(notebook user with the per-server key, sshd for the tunnels), and starts jupyterhub-singleuser
in it over CloudSSHSpawner's tunnel. Everything is real; after each test the containers labelled
with the hub's id, the per-server key directories, the hub's tunnel sockets and Ansible's ssh
processes are counted and must be zero.
"""

import asyncio
import json
import re
import secrets
from pathlib import Path

import asyncssh
import pytest
import requests

from tests.fixtures.machines import NOTEBOOK_ENV, MachineCounter, hub_ca
from tests.fixtures.procs import wait_until

pytestmark = pytest.mark.slow

USER = "alice"


def machine_catalogue(image: str, configurer_variables=None, spawner_kwargs=None, *, provider="docker",
                      name="container-machine", display_name="Container machine",
                      notebook_env=NOTEBOOK_ENV, cpu=1, template_extra=None) -> dict:
    """One ``virtual_machine`` template (and its deployment, same name) on ``provider``."""
    return {
        "deployments": {"virtual_machine": [{"name": name, "provider": provider, "image": image}]},
        "templates": [{
            "name": name,
            "display_name": display_name,
            "description": f"A fresh {provider} machine, configured by Ansible, reached over SSH",
            "resource_type": "virtual_machine",
            "providers": [provider],
            "resources": {"cpu": {"default": cpu, "min": 0.5, "max": 2},
                          "memory_mb": {"default": 1024, "min": 512, "max": 2048}},
            "spawner": {"class": "cloudsshspawner.CloudSSHSpawner",
                        "kwargs": {"default_url": "/lab", "keepalive_interval": 2, "term_timeout": 5,
                                   **(spawner_kwargs or {})}},
            "configurer": {"class": "ansible", "options": {
                "timeout": 900,
                "variables": {"notebook_env_path": notebook_env, **(configurer_variables or {})},
            }},
            **(template_extra or {}),
        }],
    }


class MachineHub:
    """A hub with one machine template, and counters for what it leaves behind.

    ``docker_engine``: the docker-py client (None: no containers); ``libvirt``: ``(uri,
    storage_dir)`` when the template's machines are libvirt VMs (see MachineCounter).
    """

    def __init__(self, hub_factory, docker_engine, cat_dir, catalogue: dict, extra: str = "", libvirt=None):
        self.hub_id = f"test-{secrets.token_hex(6)}"
        self.cat_file = cat_dir / "catalogue.json"
        self.cat_file.write_text(json.dumps(catalogue))
        self.docker = docker_engine
        self.libvirt = libvirt
        self.hub = hub_factory(f"""
c.JupyterHub.spawner_class = "multiple"
c.MultipleSpawner.catalogue_paths = [{str(self.cat_file)!r}]
c.MultipleSpawner.catalogue_check_interval = 0
c.MachineOrchestrator.hub_id = {self.hub_id!r}
c.MachineOrchestrator.ready_timeout = 60
c.Spawner.poll_interval = 3
{extra}
""")
        self.hub.create_user(USER)

    def counter(self) -> MachineCounter:
        return MachineCounter.of_hub(self.docker, self.hub_id, self.hub, libvirt=self.libvirt)

    def failure(self, user_options=None) -> str:
        """Start a spawn that must fail; return the message the user sees."""
        hub = self.hub
        r = hub.api("POST", f"/users/{USER}/server", json=user_options or {})
        if r.status_code == 500:  # failed within the hub's slow_spawn_timeout: the answer says why
            wait_until(lambda: hub.server_model(USER) is None, timeout=120, message="failed server removed")
            return r.json()["message"]
        assert r.status_code in (201, 202), r.text
        progress = hub.api("GET", f"/users/{USER}/server/progress", stream=True, timeout=900)
        message = None
        for line in progress.iter_lines(decode_unicode=True):
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if event.get("failed"):
                    message = event["message"]
                    break
                assert not event.get("ready"), "the spawn was expected to fail"
        progress.close()
        wait_until(lambda: hub.server_model(USER) is None, timeout=120, message="failed server removed")
        assert message, hub.log_tail()
        return message


@pytest.fixture
def cat_dir(tmp_path):
    tmp_path.chmod(0o755)
    return tmp_path


def assert_nothing_left(mh: MachineHub):
    """Containers, key directories, tunnels and Ansible's ssh processes: all zero (waits a little)."""
    left = mh.counter().wait_for_nothing_left()
    assert left == {}, f"left behind: {left}"


def test_container_machine_spawn_restart_stop(hub_factory, docker_engine, prepared_image, cat_dir):
    mh = MachineHub(hub_factory, docker_engine, cat_dir, machine_catalogue(prepared_image))
    hub = mh.hub
    model = hub.spawn(USER, user_options={"cpu": 1, "memory_mb": 1024}, timeout=900)
    state = model["state"]
    lease = state["machine"]
    assert lease["kind"] == "provider" and lease["provider"] == "docker"
    assert lease["config_hash"]

    # one container, labelled for this hub and user, with the chosen limits, sshd on loopback only
    (container,) = mh.counter().containers()
    assert container.id == lease["machine"]["id"]
    assert container.labels["org.jupyterhub-multiplespawner.user"] == USER
    host_config = container.attrs["HostConfig"]
    assert host_config["NanoCpus"] == 1_000_000_000 and host_config["Memory"] == 1024 * 2**20
    assert {b["HostIp"] for b in container.attrs["NetworkSettings"]["Ports"]["22/tcp"]} == {"127.0.0.1"}

    # the notebook runs as the notebook user inside, bound to 127.0.0.1, reached through the hub
    r = hub.server_request(USER, "api/status")
    assert r.status_code == 200, r.text
    code, out = container.exec_run(["ps", "-o", "user=,args=", "-u", USER])
    assert code == 0 and f"{NOTEBOOK_ENV}/bin/jupyterhub-singleuser" in out.decode()
    assert state["child_state"]["host_key"] == lease["machine"]["host_public_key"]
    assert state["child_state"]["username"] == USER
    assert len(mh.counter().credential_dirs()) == 1
    # Ansible task results reached the spawn's progress messages
    assert "Configuring: TASK [Create the notebook user] changed" in hub.log_text()

    # the hub restarts: the server is still reachable, nothing was reaped
    hub.restart()
    wait_until(lambda: hub.server_request(USER, "api/status").status_code == 200, timeout=90,
               message="lab reachable after the hub restart")
    assert [c.id for c in mh.counter().containers()] == [container.id]
    assert "Orphan check for hub" in hub.log_text() and "Reaping" not in hub.log_text()

    hub.stop_server(USER)
    assert_nothing_left(mh)
    with pytest.raises(Exception):
        docker_engine.containers.get(container.id)


def test_certificate_authenticator_logs_in_with_a_ca_certificate(hub_factory, docker_engine, prepared_image, cat_dir):
    """authenticator: certificate -> the notebook user has no authorized key; sshd trusts the
    hub CA (set by the playbook) and the hub logs in with the per-server key's certificate."""
    ca_file, ca = hub_ca(cat_dir)
    catalogue = machine_catalogue(prepared_image, template_extra={
        "authenticator": {"class": "certificate", "kwargs": {"validity_seconds": 3600}}})
    mh = MachineHub(hub_factory, docker_engine, cat_dir, catalogue, f"c.CredentialStore.ca_key_file = {str(ca_file)!r}")
    hub = mh.hub
    model = hub.spawn(USER, timeout=900)
    lease = model["state"]["machine"]
    cert = asyncssh.import_certificate(lease["credentials"]["certificate"])
    assert cert.principals == [USER] and cert.signing_key.public_data == ca.public_data
    assert model["state"]["child_state"]["username"] == USER
    assert hub.server_request(USER, "api/status").status_code == 200

    (container,) = mh.counter().containers()
    code, out = container.exec_run(["sh", "-c", f"ls -a ~{USER}/.ssh; cat /etc/ssh/jupyterhub_user_ca.pub; "
                                                "grep TrustedUserCAKeys /etc/ssh/sshd_config.d/00-jupyterhub.conf"])
    assert code == 0, out
    assert "authorized_keys" not in out.decode()  # the certificate is the only way in
    assert ca.export_public_key().decode().split()[1] in out.decode()
    assert "TrustedUserCAKeys /etc/ssh/jupyterhub_user_ca.pub" in out.decode()
    # sshd accepted a certificate from our CA for the notebook user (the tunnel's login)
    ca_fingerprint = ca.get_fingerprint()
    assert re.search(rf"Accepted publickey for {USER} from \S+ port \d+ ssh2: ED25519-CERT \S+ "
                     rf"ID jupyterhub-\S+ \(serial \d+\) CA ED25519 {re.escape(ca_fingerprint)}",
                     container.logs().decode()), container.logs().decode()[-3000:]

    # the same per-server key without its certificate does not log in as the notebook user
    machine = lease["machine"]
    key = asyncssh.read_private_key(str(Path(lease["credentials"]["directory"]) / "id_ed25519"))

    async def login_without_certificate():
        known = asyncssh.import_known_hosts(f"[{machine['host']}]:{machine['port']} {machine['host_public_key']}\n")
        async with asyncssh.connect(machine["host"], machine["port"], username=USER, client_keys=[key],
                                    known_hosts=known, agent_path=None, password=None):
            pass

    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(login_without_certificate())

    hub.stop_server(USER)
    assert_nothing_left(mh)


def test_orphans_are_reaped_at_first_spawn_and_at_hub_start(hub_factory, docker_engine, prepared_image, cat_dir):
    """Machines labelled for this hub that no server owns are destroyed (and logged): before the
    first machine of a hub process is created, and at hub start when the hub loads a running
    machine-backed server's state."""
    from multiplespawner.machines.credentials import CredentialStore
    from multiplespawner.providers.base import MachineSpec, Resources
    from multiplespawner.providers.docker import DockerProvider
    from multiplespawner.providers.identity import HUB_LABEL

    mh = MachineHub(hub_factory, docker_engine, cat_dir, machine_catalogue(prepared_image))
    store = CredentialStore(base_dir=str(cat_dir / "orphan-keys"))

    async def make_orphan():
        creds = await store.create("orphan")
        spec = MachineSpec(name=f"orphan-{secrets.token_hex(4)}", deployment={"image": prepared_image},
                           resources=Resources(cpu=0.5, memory_mb=256), ssh_user="jhadmin",
                           authorized_key=creds.client_public_key, host_key_private=creds.host_private_key,
                           labels={HUB_LABEL: mh.hub_id, "org.jupyterhub-multiplespawner.user": "ghost"})
        machine = await DockerProvider().create(spec)
        await store.remove(creds)
        return machine

    orphans = [asyncio.run(make_orphan())]
    try:
        # the hub runs no machine-backed server: the first spawn's orphan check reaps it
        mh.hub.spawn(USER, timeout=900)
        ids = [c.id for c in mh.counter().containers()]
        assert len(ids) == 1 and orphans[0].id not in ids
        assert f"Reaping docker machine {orphans[0].id}" in mh.hub.log_text()

        # a machine left behind while the hub is down is reaped when the hub starts again and
        # loads the running server's state; the server keeps running
        orphans.append(asyncio.run(make_orphan()))
        mh.hub.restart()
        wait_until(lambda: f"Reaping docker machine {orphans[1].id}" in mh.hub.log_text(), timeout=60,
                   message="orphan reaped at hub start")
        assert [c.id for c in mh.counter().containers()] == ids
        assert mh.hub.server_request(USER, "api/status").status_code == 200
        mh.hub.stop_server(USER)
        assert_nothing_left(mh)
    finally:
        for orphan in orphans:
            try:
                docker_engine.containers.get(orphan.id).remove(force=True)
            except Exception:
                pass


FAULTS = {
    # phase: (catalogue builder args, extra hub config, words the user's message must contain)
    "create": (lambda images: machine_catalogue("jupyterhub-multiplespawner/no-such-image:none"),
               "", ["The create step failed", "is not on the Docker engine"]),
    "wait": (lambda images: machine_catalogue(images["stalled"]),
             "c.MachineOrchestrator.ready_timeout = 8", ["The wait step failed", "did not answer over SSH"]),
    "configure": (lambda images: machine_catalogue(
        images["prepared"], configurer_variables={"notebook_env_path": "/opt/other-env",
                                                  "notebook_env_python": "/nonexistent/python3"}),
                  "", ["The configure step failed", "Create the notebook environment"]),
    "start": (lambda images: machine_catalogue(
        images["prepared"], spawner_kwargs={"cmd": ["/nonexistent/jupyterhub-singleuser"]}),
              "", ["The start step failed", "/nonexistent/jupyterhub-singleuser"]),
}


@pytest.mark.parametrize("phase", list(FAULTS))
def test_fault_in_each_phase_leaves_nothing(phase, hub_factory, docker_engine, prepared_image, stalled_image, cat_dir):
    build, extra, words = FAULTS[phase]
    mh = MachineHub(hub_factory, docker_engine, cat_dir,
                    build({"prepared": prepared_image, "stalled": stalled_image}), extra)
    message = mh.failure()
    for word in words:
        assert word in message, message
    assert_nothing_left(mh)
    # the hub still serves: the user may try again and sees the form error-free
    assert requests.get(f"{mh.hub.api_url}/", timeout=10).status_code == 200
