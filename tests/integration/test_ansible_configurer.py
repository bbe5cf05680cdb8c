"""AnsibleConfigurer against a real machine: a container from the ssh-machine image, reached
over SSH on 127.0.0.1 with a per-server key and a pinned host key, configured by the shipped
playbooks with wheels from the hub (no package index on the machine).

The tests run in file order on one machine: configure, check the machine, run again (changed=0),
skip by hash, fail with a bad variable, then tear down and check that nothing is left.
"""

import asyncio
from pathlib import Path

import pytest

from multiplespawner.configurers import AnsibleConfigurer, ConfigurerError
from multiplespawner.machines.credentials import CredentialStore
from multiplespawner.providers.base import Machine, wait_for_ssh
from tests.fixtures.docker_engine import TEST_LABEL, containers
from tests.fixtures.net import free_port

# the first run installs JupyterLab on the machine: minutes on a busy 2-core machine
pytestmark = pytest.mark.slow

NOTEBOOK_USER = "alice"
ADMIN_USER = "admin"
VENV = "/opt/jupyterhub-notebook"


@pytest.fixture(scope="module")
def notebook_wheels():
    """Wheels of the hub's jupyterhub and jupyterlab versions for the machine image's exact
    Python, downloaded once on the host."""
    from images.build import BASE_RECIPE, DEBIAN_PYTHON, notebook_requirements, wheelhouse

    return wheelhouse(notebook_requirements(), DEBIAN_PYTHON[BASE_RECIPE["suite"]])


class MachineUnderTest:
    """One ssh-machine container with fresh per-server credentials; ``teardown()`` removes both."""

    def __init__(self, docker_engine, image, tmp_path, label):
        self.client = docker_engine
        self.store = CredentialStore(base_dir=str(tmp_path / "keys"))
        self.credentials = asyncio.run(self.store.create(f"{NOTEBOOK_USER}-lab"))
        port = free_port("127.0.0.1")
        self.container = docker_engine.containers.run(
            image,
            detach=True,
            labels={TEST_LABEL: label},
            environment={
                "MACHINE_USER": ADMIN_USER,
                "MACHINE_AUTHORIZED_KEYS": self.credentials.client_public_key,
                "MACHINE_SSH_HOST_KEY": self.credentials.host_private_key,
            },
            ports={"22/tcp": ("127.0.0.1", port)},
        )
        self.machine = Machine(
            id=self.container.id[:12], provider="docker", host="127.0.0.1", port=port,
            ssh_user=ADMIN_USER, host_public_key=self.credentials.host_public_key,
        )
        asyncio.run(wait_for_ssh("127.0.0.1", port, self.credentials.host_public_key, timeout=60))

    def sh(self, command: str) -> str:
        """Run ``command`` as root in the machine; return its output, failing on a non-zero exit."""
        code, out = self.container.exec_run(["sh", "-c", command])
        assert code == 0, f"{command!r} exited {code}: {out.decode(errors='replace')}"
        return out.decode()

    def teardown(self):
        try:
            self.container.remove(force=True, v=True)
        except Exception:
            pass
        asyncio.run(self.store.remove(self.credentials))


def leaked_control_masters() -> list[str]:
    """SSH control masters ("ssh: <socket> [mux]") whose socket directory no longer exists."""
    leaked = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace").replace("\0", " ").strip()
        except OSError:
            continue
        if cmdline.startswith("ssh: ") and cmdline.endswith("[mux]"):
            if not Path(cmdline.split()[1]).parent.exists():
                leaked.append(f"{proc.name}: {cmdline}")
    return leaked


def ansible_processes_under(directory: Path) -> list[str]:
    """ansible-playbook processes whose command line mentions ``directory``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace").replace("\0", " ")
        except OSError:
            continue
        if "ansible-playbook" in cmdline and str(directory) in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


@pytest.fixture(scope="module")
def machine(docker_engine, ssh_machine_image, tmp_path_factory, docker_session_label):
    m = MachineUnderTest(docker_engine, ssh_machine_image, tmp_path_factory.mktemp("ansible"), docker_session_label)
    try:
        yield m
    finally:
        m.teardown()


@pytest.fixture
def configurer(notebook_wheels, tmp_path):
    return AnsibleConfigurer(wheel_dir=str(notebook_wheels), work_dir=str(tmp_path), timeout=600)


VARIABLES = {"notebook_user_name": NOTEBOOK_USER, "notebook_user_uid": 1234}


async def test_wheels_for_another_python_are_refused_before_anything_changes(machine, tmp_path):
    """A wheel directory recorded for another patch release of Python than the machine's: the
    playbook's first check stops the run with both versions named, and no venv is made."""
    machine_python = machine.sh("/usr/bin/python3 -c 'import platform; print(platform.python_version())'").strip()
    major, minor, patch = machine_python.split(".")
    other = f"{major}.{minor}.{int(patch) + 5}"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "placeholder-1-py3-none-any.whl").write_bytes(b"never installed")
    (wheels / "python-version").write_text(other + "\n")
    messages = []
    configurer = AnsibleConfigurer(wheel_dir=str(wheels), work_dir=str(tmp_path / "runs"), timeout=600)
    (tmp_path / "runs").mkdir()
    with pytest.raises(ConfigurerError) as failure:
        await configurer.configure(machine.machine, machine.credentials, VARIABLES, messages.append)
    assert f"Python {machine_python}, the wheels are for Python {other}" in str(failure.value)
    assert "TASK [Compare it with the wheels' Python version] failed" in messages
    assert not any("Create the notebook environment" in m for m in messages)
    machine.sh(f"test ! -e {VENV} && test -z \"$(ls -A /var/tmp)\"")


async def test_configure_prepares_the_machine(machine, configurer, tmp_path):
    messages = []
    result = await configurer.configure(machine.machine, machine.credentials, VARIABLES, messages.append)
    assert not result.skipped and result.changed > 0
    assert "TASK [Create the notebook user] changed" in messages
    assert "TASK [Configure sshd for the notebook tunnels] changed" in messages
    assert list(tmp_path.iterdir()) == [], "the private run directory was not removed"
    assert leaked_control_masters() == []
    machine.config_hash = result.config_hash

    # the environment: jupyterhub at the hub's version, JupyterLab, usable by the notebook user
    versions = machine.sh(f"{VENV}/bin/python -m pip freeze")
    for requirement in configurer.notebook_packages:
        assert requirement in versions.splitlines()
    machine.sh(f"su {NOTEBOOK_USER} -c '{VENV}/bin/jupyterhub-singleuser --version'")
    machine.sh(f"su {NOTEBOOK_USER} -c '{VENV}/bin/jupyter lab --version'")
    assert machine.sh("ls -A /var/tmp") == "", "the copied wheels were not removed"

    # the user: fixed uid, only the per-server key, restricted to what the tunnels need, no sudo
    assert machine.sh(f"id -u {NOTEBOOK_USER}").strip() == "1234"
    keys = machine.sh(f"cat ~{NOTEBOOK_USER}/.ssh/authorized_keys").splitlines()
    assert keys == [f"restrict,port-forwarding {machine.credentials.client_public_key}"]
    assert machine.sh(f"stat -c %a:%U ~{NOTEBOOK_USER}/.ssh ~{NOTEBOOK_USER}/.ssh/authorized_keys").split() == [
        f"700:{NOTEBOOK_USER}", f"600:{NOTEBOOK_USER}",
    ]
    assert "is not allowed to run sudo" in machine.sh(f"sudo -l -U {NOTEBOOK_USER}")

    # sshd: the configuration has the tunnel settings, and the running daemon reloaded it
    assert "Received SIGHUP; restarting." in machine.container.logs().decode(errors="replace")
    effective = machine.sh("/usr/sbin/sshd -T").splitlines()
    for line in (
        "allowtcpforwarding yes", "gatewayports no", "passwordauthentication no",
        "kbdinteractiveauthentication no", "clientaliveinterval 30", "clientalivecountmax 3",
        "allowagentforwarding no", "x11forwarding no",
    ):
        assert line in effective


async def test_notebook_user_logs_in_with_the_server_key_only(machine):
    import asyncssh

    known = asyncssh.import_known_hosts(
        machine.credentials.known_hosts_line(machine.machine.host, machine.machine.port)
    )
    key = asyncssh.read_private_key(machine.credentials.client_key_path)
    async with asyncssh.connect(
        machine.machine.host, machine.machine.port, username=NOTEBOOK_USER, client_keys=[key],
        known_hosts=known, agent_path=None,
    ) as conn:
        result = await conn.run("id -un", check=True)
        assert result.stdout.strip() == NOTEBOOK_USER
        # a forward through sshd to a port on the machine works (what the spawner's tunnel does)
        reader, writer = await conn.open_connection("127.0.0.1", 22)
        assert (await reader.readline()).startswith(b"SSH-2.0-")
        writer.close()
    other = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(
            machine.machine.host, machine.machine.port, username=NOTEBOOK_USER, client_keys=[other],
            known_hosts=known, agent_path=None,
        )


async def test_second_run_changes_nothing(machine, configurer):
    messages = []
    result = await configurer.configure(machine.machine, machine.credentials, VARIABLES, messages.append)
    assert not result.skipped
    assert result.changed == 0, [m for m in messages if m.endswith("changed")]
    assert result.config_hash == machine.config_hash
    assert "TASK [Copy the wheels to the machine] skipped" in messages
    assert "TASK [Reload sshd] changed" not in messages


async def test_same_hash_skips_ansible(machine, configurer):
    messages = []
    result = await configurer.configure(
        machine.machine, machine.credentials, VARIABLES, messages.append, previous_hash=machine.config_hash
    )
    assert result.skipped and messages == ["already configured: nothing to do"]
    changed = await configurer.configure(
        machine.machine, machine.credentials, {**VARIABLES, "notebook_user_sudo": True},
        messages.append, previous_hash=machine.config_hash,
    )
    assert not changed.skipped and changed.config_hash != machine.config_hash
    assert "TASK [Grant passwordless sudo] changed" in messages
    assert "NOPASSWD: ALL" in machine.sh(f"sudo -l -U {NOTEBOOK_USER}")


async def test_cancelled_run_stops_ansible_and_cleans_up(machine, configurer, tmp_path):
    started = asyncio.Event()
    task = asyncio.ensure_future(
        configurer.configure(machine.machine, machine.credentials, VARIABLES, lambda message: started.set())
    )
    await asyncio.wait_for(started.wait(), 120)
    assert ansible_processes_under(tmp_path), "ansible-playbook should be running now"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 60)
    assert ansible_processes_under(tmp_path) == []
    assert list(tmp_path.iterdir()) == []
    assert leaked_control_masters() == []


async def test_bad_variable_names_the_failed_task(machine, configurer):
    with pytest.raises(ConfigurerError) as info:
        await configurer.configure(
            machine.machine, machine.credentials,
            {**VARIABLES, "notebook_env_path": "/opt/other-env", "notebook_env_python": "/nonexistent/python3"},
        )
    message = str(info.value)
    # with wheels, the first task to need that Python is the check of its version
    assert "task 'Check that the machine's Python runs'" in message
    assert f"{machine.machine.host}:{machine.machine.port}" in message
    assert "/nonexistent/python3" in message


async def test_wrong_host_key_is_refused(machine, configurer):
    import asyncssh

    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().strip()
    other = Machine(**{**machine.machine.to_state(), "host_public_key": impostor})
    creds = type(machine.credentials)(**{**machine.credentials.__dict__, "host_public_key": impostor})
    with pytest.raises(ConfigurerError) as info:
        await configurer.configure(other, creds, VARIABLES)
    assert "did not present the host key pinned at its creation" in str(info.value)


def test_teardown_leaves_nothing(machine, docker_engine, docker_session_label):
    directory = machine.credentials.directory
    assert directory.is_dir()
    machine.teardown()
    assert not directory.exists()
    assert list(machine.store.root.iterdir()) == []
    remaining = containers(docker_engine, id=machine.container.id)
    assert remaining == []
    machine.teardown()  # idempotent
