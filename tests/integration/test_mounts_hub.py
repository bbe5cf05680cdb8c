"""A template's storage mounts through a real hub: auth_state (encrypted) holds the user's
storage key and the storage's pinned host key, a container template mounts an SFTP directory
of a real OpenSSH server (the storage) with sshfs on the hub host and DockerSpawner binds it
into the container at ~/work.

Checked: the container user lists a file that exists only on the storage and writes one that
lands there; the progress stream says "Mounting <name> ... done"; stopping the server leaves
no sshfs mount of the server's marker, no sshfs or ssh-agent process (by the PIDs the state
recorded) and no per-server directory. With the storage down a required mount fails the spawn
with a message naming the mount and leaves no container and no mount; a mount that is not
required lets the server start and the progress stream says why it is missing.
"""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from multiplespawner.mounts.sshfs import find_mounts
from tests.fixtures.docker_engine import containers
from tests.fixtures.procs import running, wait_until
from tests.fixtures.sshd import make_client_key

NAME = "your storage"


def marker_prefix(user: str, server: str = "") -> str:
    digest = hashlib.sha256(f"{user}\0{server}".encode()).hexdigest()[:16]
    return f"ms-{digest}-"


@pytest.fixture
def runtime_dir():
    """The hub's mounts_runtime_dir for this test; leftover mounts in it are unmounted after."""
    base = Path(tempfile.mkdtemp(prefix="msm-", dir="/run"))
    yield base
    for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
        point = line.split()[4]
        if point.startswith(f"{base}/"):
            subprocess.run(["fusermount3", "-u", "-z", point], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def storage(sshd, tmp_path):
    """(sshd, storage directory holding only-on-storage.txt, private key PEM)."""
    directory = tmp_path / "storage"
    directory.mkdir(mode=0o755)
    (directory / "only-on-storage.txt").write_text("from the storage\n")
    keydir = Path(tempfile.mkdtemp(prefix="mount-key-", dir="/run"))
    try:
        path, public = make_client_key(keydir)
        pem = path.read_text()
    finally:
        shutil.rmtree(keydir)
    sshd.authorize("root", public)
    return sshd, directory, pem


def template(name, sshd, directory, required=True):
    return {
        "name": name, "resource_type": "container", "providers": ["docker"],
        "spawner": {"class": "dockerspawner.DockerSpawner",
                    "kwargs": {"image": "{DEPLOYMENT_IMAGE}", "remove": True,
                               "name_template": "ms-mnt-{username}-{servername}"}},
        "mounts": [{
            "kind": "sshfs", "name": NAME, "target": "work", "required": required,
            "source": {"user": "root", "host": sshd.host, "port": sshd.port, "path": str(directory)},
            "credential": {"from": "auth_state", "key_field": "storage_key",
                           "host_key_field": "storage_host_key"},
        }],
    }


def start_hub(hub_factory, docker_engine, notebook_image, tmp_path, runtime_dir, templates):
    tmp_path.chmod(0o755)
    cat = tmp_path / "catalogue.json"
    cat.write_text(json.dumps({
        "deployments": {"container": [{"name": "here", "provider": "docker", "image": notebook_image}]},
        "templates": templates,
    }))
    gateway = docker_engine.networks.get("bridge").attrs["IPAM"]["Config"][0]["Gateway"]
    return hub_factory(f"""
c.JupyterHub.spawner_class = "multiple"
c.JupyterHub.allow_named_servers = True
c.JupyterHub.hub_ip = {gateway!r}
c.JupyterHub.hub_connect_ip = {gateway!r}
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
c.Authenticator.enable_auth_state = True
c.MultipleSpawner.catalogue_paths = [{str(cat)!r}]
c.MultipleSpawner.mounts_runtime_dir = {str(runtime_dir)!r}
c.MultipleSpawner.mount_timeout = 20


async def pre_spawn_hook(spawner):
    # a failure at the mount takes milliseconds: give the test time to open the progress stream
    import asyncio
    await asyncio.sleep(2)


c.Spawner.pre_spawn_hook = pre_spawn_hook
""", env={"JUPYTERHUB_CRYPT_KEY": os.urandom(32).hex()})


def give_credentials(hub, user, sshd, pem):
    hub.create_user(user)
    r = hub.api("PATCH", f"/users/{user}",
                json={"auth_state": {"storage_key": pem, "storage_host_key": sshd.known_hosts_line()}})
    assert r.status_code == 200, r.text
    r = hub.api("GET", f"/users/{user}", params={"include_auth_state": "true"})
    assert r.json()["auth_state"]["storage_host_key"] == sshd.known_hosts_line(), r.text


def in_container(docker_engine, container_id, *argv):
    result = docker_engine.containers.get(container_id).exec_run(list(argv), user="jovyan")
    return result.exit_code, result.output.decode(errors="replace")


def test_storage_mounted_into_the_container_and_gone_after_stop(
        storage, hub_factory, docker_engine, notebook_image, tmp_path, runtime_dir):
    sshd, directory, pem = storage
    hub = start_hub(hub_factory, docker_engine, notebook_image, tmp_path, runtime_dir,
                    [template("box", sshd, directory)])
    give_credentials(hub, "ann", sshd, pem)
    pids = []
    try:
        r = hub.api("POST", "/users/ann/server", json={"user_options": {"template": "box"}})
        assert r.status_code == 202, r.text
        messages = [e["message"] for e in hub.progress("ann")]
        hub.wait_for_ready("ann", timeout=180)
        assert f"Mounting {NAME} ..." in messages and f"Mounting {NAME} ... done" in messages, messages
        assert messages.index(f"Mounting {NAME} ... done") < messages.index("Starting DockerSpawner"), messages

        state = hub.user("ann")["servers"][""]["state"]
        [entry] = state["mounts"]["mounts"]
        server_dir = Path(state["mounts"]["server_dir"])
        assert server_dir == runtime_dir / marker_prefix("ann")[3:-1]
        assert (server_dir.stat().st_mode & 0o777, server_dir.stat().st_uid) == (0o700, 0)
        pids = [entry["mount"]["sshfs_pid"], entry["mount"]["agent_pid"]]
        assert all(running(pid) for pid in pids)
        assert [m.path for m in find_mounts(marker_prefix("ann"))] == [server_dir / "0"]
        assert pem.splitlines()[2] not in json.dumps(state)

        container_id = state["child_state"]["object_id"]
        code, out = in_container(docker_engine, container_id, "ls", "-ln", "/home/jovyan/work")
        assert code == 0 and "only-on-storage.txt" in out, out
        code, out = in_container(docker_engine, container_id, "cat", "/home/jovyan/work/only-on-storage.txt")
        assert (code, out) == (0, "from the storage\n")
        code, out = in_container(docker_engine, container_id, "sh", "-c",
                                 "echo from the container > /home/jovyan/work/written.txt")
        assert code == 0, out
        assert (directory / "written.txt").read_text() == "from the container\n"

        hub.stop_server("ann")
        wait_until(lambda: not containers(docker_engine, id=container_id), timeout=60, message="container removed")
        assert find_mounts(marker_prefix("ann")) == []
        wait_until(lambda: not any(running(pid) for pid in pids), timeout=10, message="sshfs and agent gone")
        assert not server_dir.exists()
        assert "mounts" not in (hub.user("ann")["servers"].get("", {}).get("state") or {})
    finally:
        for pid in pids:  # only if the test failed before the stop did its work
            if running(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def test_storage_down_required_fails_optional_starts(
        storage, hub_factory, docker_engine, notebook_image, tmp_path, runtime_dir):
    sshd, directory, pem = storage
    hub = start_hub(hub_factory, docker_engine, notebook_image, tmp_path, runtime_dir,
                    [template("needed", sshd, directory), template("extra", sshd, directory, required=False)])
    give_credentials(hub, "bob", sshd, pem)
    sshd.stop()

    # required: the spawn fails naming the mount and the cause; no container, nothing mounted
    r = hub.api("POST", "/users/bob/servers/a", json={"user_options": {"template": "needed"}})
    assert r.status_code == 202, r.text
    events = hub.progress("bob", "a")
    last = events[-1]
    assert last.get("failed"), events
    assert last["message"] == f"Spawn failed: Mounting {NAME} failed: connection refused", last
    assert f"Mounting {NAME} ... failed: connection refused" in [e["message"] for e in events]
    wait_until(lambda: not hub.server_model("bob", "a"), timeout=30, message="failed server gone")
    assert containers(docker_engine, name="ms-mnt-bob-a") == []
    assert find_mounts(marker_prefix("bob", "a")) == []
    assert list(runtime_dir.iterdir()) == []
    assert "Starting DockerSpawner" not in [e["message"] for e in events]

    # not required: the server starts without it, and the progress stream says why
    r = hub.api("POST", "/users/bob/servers/b", json={"user_options": {"template": "extra"}})
    assert r.status_code == 202, r.text
    messages = [e["message"] for e in hub.progress("bob", "b")]
    hub.wait_for_ready("bob", "b", timeout=180)
    assert (f"Mounting {NAME} ... failed: connection refused; the server starts without it") in messages, messages
    state = hub.user("bob")["servers"]["b"]["state"]
    assert state["mounts"]["mounts"] == []
    code, out = in_container(docker_engine, state["child_state"]["object_id"], "ls", "/home/jovyan")
    assert code == 0 and "work" not in out.split(), out
    hub.stop_server("bob", "b")
    assert find_mounts(marker_prefix("bob", "b")) == [] and list(runtime_dir.iterdir()) == []
