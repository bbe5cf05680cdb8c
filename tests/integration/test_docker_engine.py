"""The Docker engine fixture and the locally built images, against a real dockerd.

* the notebook image runs jupyterhub-singleuser at exactly the hub's JupyterHub version, as a
  non-root user;
* the ssh-machine image accepts an injected login key and presents the injected (or logged)
  host key; logins verify it, and a wrong pin is refused; its port is published on loopback only;
* CPU and memory limits given to ``docker run`` reach the container's cgroup and are enforced;
* a second build finds every image cached, and a changed recipe gets a new tag;
* no container this session labelled is left behind.
"""

import time
from importlib.metadata import version

import asyncssh
import pytest

from images.build import build_image
from tests.fixtures.docker_engine import (
    TEST_LABEL,
    ContainerRunner,
    labelled_containers,
)
from tests.fixtures.net import free_port


def wait_for_log(container, text: str, timeout: float = 30) -> str:
    """Wait until ``text`` appears in the container's log; raise with the log if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        logs = container.logs().decode(errors="replace")
        if text in logs:
            return logs
        container.reload()
        if container.status == "exited" or time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the log of {container.name} ({container.status}):\n{logs}")
        time.sleep(0.2)


def run_to_completion(container, timeout: float = 120) -> tuple[int, str]:
    result = container.wait(timeout=timeout)
    return result["StatusCode"], container.logs().decode(errors="replace")


def test_engine_answers(docker_engine):
    assert docker_engine.ping()
    info = docker_engine.info()
    assert info["Driver"] == "overlay2"


def test_notebook_image_runs_the_hubs_jupyterhub(docker_engine, docker_run, notebook_image):
    container = docker_run(
        notebook_image,
        ["sh", "-c", "jupyterhub-singleuser --version && jupyter lab --version && id -un && id -u"],
    )
    status, out = run_to_completion(container)
    assert status == 0, out
    singleuser, lab, user, uid = out.split()
    assert singleuser == version("jupyterhub")
    assert lab == version("jupyterlab")
    assert (user, uid) == ("jovyan", "1000")
    attrs = docker_engine.images.get(notebook_image).attrs["Config"]
    assert attrs["Cmd"] == ["jupyterhub-singleuser"]
    assert attrs["User"] == "jovyan"


def _machine_keys():
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    return host_key, client_key


def _published_on_loopback(container, port: int):
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"]["22/tcp"]
    assert bindings == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]


@pytest.mark.parametrize("host_key_via", ["volume", "env"])
async def test_ssh_machine_login_with_pinned_host_key(docker_run, ssh_machine_image, tmp_path, host_key_via):
    host_key, client_key = _machine_keys()
    port = free_port("127.0.0.1")
    env = {"MACHINE_AUTHORIZED_KEYS": client_key.export_public_key().decode()}
    volumes = {}
    if host_key_via == "volume":
        machine_dir = tmp_path / "machine"
        machine_dir.mkdir(mode=0o700)
        host_key.write_private_key(machine_dir / "ssh_host_ed25519_key")
        volumes = {str(machine_dir): {"bind": "/etc/machine", "mode": "ro"}}
    else:
        env["MACHINE_SSH_HOST_KEY"] = host_key.export_private_key().decode()

    container = docker_run(ssh_machine_image, environment=env, volumes=volumes, ports={"22/tcp": ("127.0.0.1", port)})
    logs = wait_for_log(container, "Server listening on")
    host_pub = host_key.export_public_key().decode().strip()
    assert f"machine-host-key: {host_pub}" in logs
    _published_on_loopback(container, port)

    known_hosts = asyncssh.import_known_hosts(f"[127.0.0.1]:{port} {host_pub}\n")
    async with asyncssh.connect(
        "127.0.0.1", port, username="root", client_keys=[client_key], known_hosts=known_hosts
    ) as conn:
        result = await conn.run("python3 -c 'import sys; print(sys.version_info[0])' && id -un", check=True)
    assert result.stdout.split() == ["3", "root"]

    # the pin is really checked: another key for the same address is refused
    wrong = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        async with asyncssh.connect(
            "127.0.0.1", port, username="root", client_keys=[client_key],
            known_hosts=asyncssh.import_known_hosts(f"[127.0.0.1]:{port} {wrong}\n"),
        ):
            pass
    # and a key that was not injected gets no login
    with pytest.raises(asyncssh.PermissionDenied):
        async with asyncssh.connect(
            "127.0.0.1", port, username="root", client_keys=[_machine_keys()[1]], known_hosts=known_hosts
        ):
            pass


async def test_ssh_machine_generated_host_key_and_admin_user(docker_run, ssh_machine_image, tmp_path):
    """No host key given: the generated one is logged, pinnable and kept across restarts;
    MACHINE_USER gets passwordless sudo."""
    _, client_key = _machine_keys()
    machine_dir = tmp_path / "machine"
    machine_dir.mkdir(mode=0o700)
    (machine_dir / "authorized_keys").write_text(client_key.export_public_key().decode())
    port = free_port("127.0.0.1")
    container = docker_run(
        ssh_machine_image,
        environment={"MACHINE_USER": "admin"},
        volumes={str(machine_dir): {"bind": "/etc/machine", "mode": "ro"}},
        ports={"22/tcp": ("127.0.0.1", port)},
    )
    logs = wait_for_log(container, "Server listening on")
    logged = [line.split(": ", 1)[1] for line in logs.splitlines() if line.startswith("machine-host-key: ")]
    assert len(logged) == 1 and logged[0].startswith("ssh-ed25519 ")

    known_hosts = asyncssh.import_known_hosts(f"[127.0.0.1]:{port} {logged[0]}\n")
    async with asyncssh.connect(
        "127.0.0.1", port, username="admin", client_keys=[client_key], known_hosts=known_hosts
    ) as conn:
        result = await conn.run("id -un && sudo -n id -un", check=True)
    assert result.stdout.split() == ["admin", "root"]

    # a restart keeps the generated key, so the pin stays valid
    listening = logs.count("Server listening on")
    container.restart(timeout=5)
    deadline = time.monotonic() + 30
    while (logs := container.logs().decode()).count("Server listening on") <= listening:
        assert time.monotonic() < deadline, logs
        time.sleep(0.2)
    keys = {line for line in logs.splitlines() if line.startswith("machine-host-key: ")}
    assert keys == {f"machine-host-key: {logged[0]}"}
    async with asyncssh.connect(
        "127.0.0.1", port, username="admin", client_keys=[client_key], known_hosts=known_hosts
    ) as conn:
        assert (await conn.run("id -un", check=True)).stdout.strip() == "admin"


def test_cpu_and_memory_limits_reach_the_cgroup(docker_run, ssh_machine_image):
    mib = 1024 * 1024
    container = docker_run(
        ssh_machine_image,
        entrypoint=["sleep", "infinity"],
        nano_cpus=500_000_000,
        mem_limit=128 * mib,
        memswap_limit=128 * mib,
    )
    container.reload()
    host_config = container.attrs["HostConfig"]
    assert host_config["NanoCpus"] == 500_000_000
    assert host_config["Memory"] == 128 * mib

    def read(*paths):
        for path in paths:
            code, out = container.exec_run(["cat", path])
            if code == 0:
                return out.decode().split()
        raise AssertionError(f"none of {paths} readable in the container")

    memory = read("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max")
    assert memory == [str(128 * mib)]
    quota = read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu.max")
    period = read("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "/sys/fs/cgroup/cpu.max")
    assert int(quota[0]) / int(period[-1]) == pytest.approx(0.5)

    # enforced, not only recorded: touching 256 MiB inside a 128 MiB limit gets the process killed
    code, out = container.exec_run(["python3", "-c", "b = bytearray(256 * 1024 * 1024); print('survived')"])
    assert code == 137 and b"survived" not in out, (code, out)
    code, _ = container.exec_run(["python3", "-c", "b = bytearray(32 * 1024 * 1024)"])
    assert code == 0


def test_ports_outside_loopback_are_refused(docker_run, ssh_machine_image, docker_engine, docker_session_label):
    before = len(labelled_containers(docker_engine, {TEST_LABEL: docker_session_label}))
    for ports in ({"22/tcp": 2222}, {"22/tcp": ("0.0.0.0", 2222)}, {"22/tcp": [("127.0.0.1", 2222), 2223]}):
        with pytest.raises(ValueError, match="127.0.0.1"):
            docker_run(ssh_machine_image, ports=ports)
    assert len(labelled_containers(docker_engine, {TEST_LABEL: docker_session_label})) == before


def test_second_build_is_cached(docker_engine, notebook_image, ssh_machine_image, capfd):
    started = time.monotonic()
    assert build_image("notebook", docker_engine) == notebook_image
    assert build_image("ssh-machine", docker_engine) == ssh_machine_image
    elapsed = time.monotonic() - started
    err = capfd.readouterr().err
    assert f"notebook: {notebook_image} cached" in err
    assert f"ssh-machine: {ssh_machine_image} cached" in err
    assert "building" not in err and "downloading" not in err and "debootstrap" not in err
    assert elapsed < 30
    # the stable alias follows the hash tag
    repository = ssh_machine_image.rsplit(":", 1)[0]
    assert docker_engine.images.get(f"{repository}:current").id == docker_engine.images.get(ssh_machine_image).id


def test_changed_recipe_gets_a_new_tag(docker_engine, ssh_machine_image, tmp_path, monkeypatch, capfd):
    import shutil

    import images.build

    recipes = tmp_path / "recipes"
    shutil.copytree(images.build.RECIPES, recipes)
    with open(recipes / "ssh-machine" / "Dockerfile", "a") as f:
        f.write(f"LABEL test.variant={tmp_path.name}\n")
    monkeypatch.setattr(images.build, "RECIPES", recipes)
    tag = build_image("ssh-machine", docker_engine, alias=False)
    try:
        assert tag != ssh_machine_image
        assert tag.startswith("jupyterhub-multiplespawner/ssh-machine:")
        assert f"ssh-machine: building {tag}" in capfd.readouterr().err
        # the alias still names the recipe in the repository
        repository = ssh_machine_image.rsplit(":", 1)[0]
        assert docker_engine.images.get(f"{repository}:current").id == docker_engine.images.get(ssh_machine_image).id
    finally:
        docker_engine.images.remove(tag)


def test_no_container_left_behind(docker_engine, docker_session_label, ssh_machine_image):
    """Runs last in this module: every container the tests above started is gone.

    It also checks the mechanism on its own: a runner's container is counted, then removed.
    """
    labels = {TEST_LABEL: docker_session_label}
    assert labelled_containers(docker_engine, labels) == []
    runner = ContainerRunner(docker_engine, docker_session_label)
    try:
        runner.run(ssh_machine_image, entrypoint=["sleep", "infinity"])
        assert len(labelled_containers(docker_engine, labels)) == 1
    finally:
        assert runner.cleanup() == 1
    assert labelled_containers(docker_engine, labels) == []
