"""AnsibleConfigurer pieces that need no machine: inventory, hashing, progress text, variables,
environment scrubbing, the skip by hash."""

import os
from pathlib import Path

import pytest

from multiplespawner.configurers import AnsibleConfigurer, ConfigurerError
from multiplespawner.configurers import ansible as mod
from multiplespawner.configurers import processes
from multiplespawner.machines.credentials import ServerCredentials
from multiplespawner.providers.base import Machine

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyHostKeyHostKeyHostKeyHostKeyHost"
CLIENT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIClientKeyClientKeyClientKeyClientKeyCl jupyterhub-alice"


@pytest.fixture
def machine():
    return Machine(id="c0ffee/1", provider="docker", host="127.0.0.1", port=2201, ssh_user="admin",
                   host_public_key=HOST_KEY)


@pytest.fixture
def credentials(tmp_path):
    return ServerCredentials(directory=tmp_path, client_public_key=CLIENT_KEY, host_public_key=HOST_KEY)


def test_inventory_pins_the_host_key_and_uses_only_the_server_key(machine, tmp_path):
    inventory = mod.build_inventory(machine, tmp_path / "id_ed25519", tmp_path / "known_hosts", "/usr/bin/python3")
    (alias, host), = inventory["all"]["hosts"].items()
    assert alias == "c0ffee-1"
    assert host["ansible_host"] == "127.0.0.1"
    assert host["ansible_port"] == 2201
    assert host["ansible_user"] == "admin"
    assert host["ansible_ssh_private_key_file"] == str(tmp_path / "id_ed25519")
    args = host["ansible_ssh_common_args"]
    for option in (
        "-F /dev/null", f"UserKnownHostsFile={tmp_path / 'known_hosts'}", "GlobalKnownHostsFile=/dev/null",
        "StrictHostKeyChecking=yes", "HostKeyAlgorithms=ssh-ed25519", "IdentitiesOnly=yes",
        "IdentityAgent=none", "PasswordAuthentication=no",
    ):
        assert option in args


def test_known_hosts_file_holds_only_the_pinned_key(machine, credentials, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    extravars = {}
    AnsibleConfigurer()._prepare_run_dir(run_dir, machine, credentials, None, extravars)
    assert (run_dir / "known_hosts").read_text() == f"[127.0.0.1]:2201 {HOST_KEY}\n"
    assert oct(run_dir.stat().st_mode & 0o777) == "0o700"
    assert extravars == {}


def test_wheel_archive_is_made_in_the_run_dir(machine, credentials, tmp_path):
    import tarfile

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "a-1-py3-none-any.whl").write_bytes(b"a")
    (wheels / "notes.txt").write_text("not a wheel")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    extravars = {}
    AnsibleConfigurer()._prepare_run_dir(run_dir, machine, credentials, wheels, extravars)
    with tarfile.open(extravars["notebook_env_wheel_archive"]) as tar:
        assert tar.getnames() == ["a-1-py3-none-any.whl"]
    assert Path(extravars["notebook_env_wheel_archive"]).parent == run_dir


@pytest.mark.parametrize(
    "event, text",
    [
        ({"event": "runner_on_ok", "event_data": {"task": "Create the notebook user", "res": {"changed": True}}},
         "TASK [Create the notebook user] changed"),
        ({"event": "runner_on_ok", "event_data": {"task": "List packages", "res": {"changed": False}}},
         "TASK [List packages] ok"),
        ({"event": "runner_on_skipped", "event_data": {"task": "Grant passwordless sudo"}},
         "TASK [Grant passwordless sudo] skipped"),
        ({"event": "runner_on_failed", "event_data": {"task": "X", "res": {}}}, "TASK [X] failed"),
        ({"event": "runner_on_failed", "event_data": {"task": "X", "res": {}, "ignore_errors": True}},
         "TASK [X] failed (ignored)"),
        ({"event": "runner_on_unreachable", "event_data": {"task": "X", "res": {}}}, "TASK [X] unreachable"),
        ({"event": "playbook_on_task_start", "event_data": {"task": "X"}}, None),
        ({"event": "verbose", "stdout": "secret stuff"}, None),
    ],
)
def test_event_to_progress_text(event, text):
    assert mod.event_message(event) == text


def test_failure_message_prefers_msg_then_stderr_and_is_bounded():
    event = {"event_data": {"res": {"msg": "non-zero return code", "stderr": "No such file: /nonexistent"}}}
    assert mod.failure_message(event) == "non-zero return code: No such file: /nonexistent"
    long = {"event_data": {"res": {"msg": "x" * 5000}}}
    assert len(mod.failure_message(long)) == 600
    assert mod.failure_message({"event_data": {"res": None}}) == "no message"
    banner = "Data could not be sent: @@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! " + "@" * 900
    unreachable = {"event_data": {"res": {"msg": banner + "\nHost key verification failed.\r\n"}}}
    assert "did not present the host key pinned" in mod.failure_message(unreachable)
    tail_matters = {"event_data": {"res": {"msg": "Summary: " + "y" * 2000 + " the real error"}}}
    assert mod.failure_message(tail_matters).startswith("Summary: ")
    assert mod.failure_message(tail_matters).endswith("the real error")


def test_hash_changes_with_host_key_playbooks_variables_and_wheels(machine):
    base = mod.config_hash(machine, "p1", {"a": 1, "b": [1, 2]}, [["w.whl", 3]])
    assert base == mod.config_hash(machine, "p1", {"b": [1, 2], "a": 1}, [["w.whl", 3]])
    other_key = Machine(**{**machine.to_state(), "host_public_key": "ssh-ed25519 BBBB"})
    other_port = Machine(**{**machine.to_state(), "port": 2202})
    assert len({
        base,
        mod.config_hash(other_key, "p1", {"a": 1, "b": [1, 2]}, [["w.whl", 3]]),
        mod.config_hash(other_port, "p1", {"a": 1, "b": [1, 2]}, [["w.whl", 3]]),
        mod.config_hash(machine, "p2", {"a": 1, "b": [1, 2]}, [["w.whl", 3]]),
        mod.config_hash(machine, "p1", {"a": 2, "b": [1, 2]}, [["w.whl", 3]]),
        mod.config_hash(machine, "p1", {"a": 1, "b": [1, 2]}, [["w.whl", 4]]),
        mod.config_hash(machine, "p1", {"a": 1, "b": [1, 2]}, None),
    }) == 7


def test_tree_digest_sees_content_and_names(tmp_path):
    (tmp_path / "roles").mkdir()
    (tmp_path / "roles" / "main.yml").write_text("a")
    first = mod.tree_digest(tmp_path)
    (tmp_path / "roles" / "main.yml").write_text("b")
    second = mod.tree_digest(tmp_path)
    (tmp_path / "roles" / "main.yml").rename(tmp_path / "roles" / "other.yml")
    third = mod.tree_digest(tmp_path)
    assert len({first, second, third}) == 3
    (tmp_path / "README.md").write_text("docs only")
    (tmp_path / ".ansible").mkdir()
    (tmp_path / ".ansible" / "cache").write_text("x")
    assert mod.tree_digest(tmp_path) == third


def test_variables_precedence_and_the_authorized_key_comes_from_the_server(credentials):
    configurer = AnsibleConfigurer(
        variables={"notebook_env_path": "/opt/nb", "notebook_user_sudo": False,
                   "notebook_user_authorized_key": "ssh-ed25519 AAAA attacker"},
        notebook_packages=["jupyterhub==9.9"], index_url="https://pypi.example/simple",
    )
    merged = configurer.playbook_variables(credentials, {"notebook_user_name": "alice", "notebook_user_sudo": True})
    assert merged == {
        "notebook_env_packages": ["jupyterhub==9.9"],
        "notebook_env_index_url": "https://pypi.example/simple",
        "notebook_env_path": "/opt/nb",
        "notebook_user_name": "alice",
        "notebook_user_sudo": True,
        "notebook_user_authorized_key": CLIENT_KEY,  # the catalogue's value is ignored
    }
    # the server's own variables name the notebook user's key (none: a CA certificate logs in)
    assert configurer.playbook_variables(
        credentials, {"notebook_user_authorized_key": ""})["notebook_user_authorized_key"] == ""


def test_default_packages_pin_the_hubs_jupyterhub():
    from importlib.metadata import version

    assert AnsibleConfigurer().notebook_packages[0] == f"jupyterhub=={version('jupyterhub')}"


def test_environment_blanks_the_hubs_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "secret-token")
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")
    monkeypatch.setenv("ANSIBLE_CONFIG", "/etc/evil.cfg")
    env = AnsibleConfigurer()._environment(tmp_path / "run", tmp_path / "cp", tmp_path / "playbooks")
    assert env["JUPYTERHUB_API_TOKEN"] == ""
    assert env["SSH_AUTH_SOCK"] == ""
    assert env["ANSIBLE_CONFIG"] == str(tmp_path / "run" / "ansible.cfg")
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert env["PATH"].startswith(os.path.dirname(os.sys.executable))
    assert "secret-token" not in env.values()


async def test_matching_previous_hash_skips_without_running(machine, credentials, tmp_path):
    configurer = AnsibleConfigurer(work_dir=str(tmp_path / "work"))
    messages = []

    async def progress(message):
        messages.append(message)

    digest = mod.config_hash(
        machine, mod.tree_digest(configurer._playbook_root()), configurer.playbook_variables(credentials, {"x": 1}), None
    )
    result = await configurer.configure(machine, credentials, {"x": 1}, progress, previous_hash=digest)
    assert result.skipped and result.config_hash == digest and result.changed == 0
    assert messages == ["already configured: nothing to do"]
    assert not (tmp_path / "work").exists()  # nothing was prepared


async def test_missing_playbook_or_wheel_dir_is_a_clear_error(machine, credentials, tmp_path):
    with pytest.raises(ConfigurerError, match="playbook .*nope.yml does not exist"):
        await AnsibleConfigurer(playbook="nope.yml").configure(machine, credentials, {})
    with pytest.raises(ConfigurerError, match="wheel directory .* does not exist"):
        await AnsibleConfigurer(wheel_dir=str(tmp_path / "missing")).configure(machine, credentials, {})


@pytest.mark.parametrize(
    "record, message",
    [
        (None, "does not say which Python its wheels are for"),
        ("3.11", "not a version X.Y.Z"),
        ("cp311", "not a version X.Y.Z"),
    ],
)
async def test_wheel_dir_must_name_its_exact_python(machine, credentials, tmp_path, record, message):
    """Refused before any run directory is made, with the `pip download` line to use."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "a-1-py3-none-any.whl").write_bytes(b"a")
    if record is not None:
        (wheels / "python-version").write_text(record + "\n")
    configurer = AnsibleConfigurer(wheel_dir=str(wheels), work_dir=str(tmp_path / "work"))
    with pytest.raises(ConfigurerError, match=message) as failure:
        await configurer.configure(machine, credentials, {})
    assert "--only-binary=:all: --python-version X.Y.Z" in str(failure.value)
    assert not (tmp_path / "work").exists()


def test_stopping_a_run_reaches_processes_in_other_sessions():
    """Ansible's workers call setsid(); killing the process group alone would leave them."""
    import subprocess
    import time

    shell = subprocess.Popen(["sh", "-c", "setsid sleep 300 & wait"])
    try:
        deadline = time.monotonic() + 10
        while len(tree := processes.process_tree(shell.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(tree) == 2, tree
        processes.kill_process_tree(shell.pid, processes.process_start_time(shell.pid))
        assert shell.wait(timeout=10) == -9
        (child, started), = tree[1:]
        assert not processes._alive(child, started), f"the setsid child {child} survived"
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()


def test_kill_process_tree_skips_a_reused_pid():
    import os

    me = os.getpid()
    processes.kill_process_tree(me, processes.process_start_time(me) + 1)  # same pid, other start time: not ours
    assert processes._alive(me, processes.process_start_time(me))


def test_vars_file_reads_back_as_the_same_values(tmp_path):
    """What ansible-playbook reads from the vars file (Ansible's loader, the one ``-e @file``
    uses) equals what was written, with every type kept: Ansible resolves an ``!unsafe`` scalar's
    type as if it were plain (``!unsafe '1001'`` is an int, ``!unsafe ''`` null).
    That Ansible does not template the strings is shown by a real run:
    tests/integration/test_ansible_runs.py::test_variables_are_data_never_templates."""
    from ansible.parsing.yaml.loader import AnsibleLoader

    from multiplespawner.configurers.ansible import write_vars_file

    variables = {"name": "{{ lookup('pipe', 'id') }}", "empty": "", "list": ["{% x %}", "", "b", "{#"],
                 "nested": {"k": "v", "uid": "1001", "yes": "true", "null": "null", "f": "1.5"},
                 "n": 3, "flag": True, "none": None}
    path = tmp_path / "vars.yml"
    write_vars_file(path, variables)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = AnsibleLoader(path.read_text()).get_single_data()
    assert loaded == variables
    assert "!unsafe" in path.read_text()


# -- the prepared-image fast path: skip notebook_env only when the image holds exactly it ---------


def _prepared(packages=None, **env):
    """An image record as images/vm/build.py writes it, for the configurer's default packages."""
    record = {
        "path": "/opt/jupyterhub-notebook",
        "python": "/usr/bin/python3",
        "python_version": "3.11.2",
        "packages": packages if packages is not None else [*mod.default_notebook_packages(), "pip==23.0.1"],
        "singleuser_version": "5.5.0",
    }
    record.update(env)
    return {"notebook_env": record}


def _wanted(**variables):
    from multiplespawner.configurers.prepared import role_defaults

    root = AnsibleConfigurer()._playbook_root()
    return {**role_defaults(root, "notebook_env"), "notebook_env_packages": mod.default_notebook_packages(),
            **variables}


@pytest.mark.parametrize(
    "prepared, variables, difference",
    [
        (_prepared(), {}, None),
        (_prepared(), {"notebook_env_wheel_python": "3.11.2"}, None),
        (_prepared(path="/opt/other"), {}, "path is '/opt/other'"),
        (_prepared(), {"notebook_env_path": "/opt/notebook"}, "wants '/opt/notebook'"),
        (_prepared(python="/usr/local/bin/python3"), {}, "python is '/usr/local/bin/python3'"),
        (_prepared(), {"notebook_env_wheel_python": "3.11.9"}, "wheels are for '3.11.9'"),
        (_prepared(packages=["jupyterhub==0.0.1", "jupyterlab==0.0.1"]), {}, "not installed exactly"),
        (_prepared(), {"notebook_env_packages": ["jupyterlab"]}, "not installed exactly in the image: jupyterlab"),
        (_prepared(), {"notebook_env_packages": [*mod.default_notebook_packages(), "numpy==2.0.0"]},
         "not installed exactly in the image: numpy==2.0.0"),
        (_prepared(singleuser_version=""), {}, "jupyterhub-singleuser ran"),
        ({}, {}, "records no prepared notebook environment"),
        ({"notebook_env": "yes"}, {}, "records no prepared notebook environment"),
        (_prepared(packages="jupyterhub"), {}, "package list"),
    ],
)
def test_prepared_image_decision_compares_every_fact(prepared, variables, difference):
    """[] (skip the role) only when path, Python, every exact requirement and the singleuser
    check all match the image's record; otherwise the difference is named."""
    from multiplespawner.configurers.prepared import notebook_env_differences

    differences = notebook_env_differences(prepared, _wanted(**variables))
    if difference is None:
        assert differences == []
    else:
        assert differences and any(difference in d for d in differences), differences


def test_shipped_playbook_tags_the_notebook_env_role():
    """--skip-tags notebook_env must reach exactly that role, and its defaults are readable."""
    import yaml

    from multiplespawner.configurers.prepared import NOTEBOOK_ENV_ROLE, role_defaults

    root = AnsibleConfigurer()._playbook_root()
    (play,) = yaml.safe_load((root / "notebook-machine.yml").read_text())
    tagged = [r["role"] for r in play["roles"] if NOTEBOOK_ENV_ROLE in r.get("tags", [])]
    assert tagged == [NOTEBOOK_ENV_ROLE]
    assert role_defaults(root, NOTEBOOK_ENV_ROLE)["notebook_env_path"] == "/opt/jupyterhub-notebook"


@pytest.mark.parametrize("prepared, use_prepared_image, skipped", [
    (_prepared(), True, ["notebook_env"]),
    (_prepared(packages=["jupyterhub==0.0.1"]), True, []),  # another environment: configured in full
    (_prepared(), False, []),  # the operator turned the fast path off
    ({}, True, []),  # a plain machine
])
async def test_configure_skips_notebook_env_only_on_a_matching_image(machine, credentials, tmp_path, prepared,
                                                                     use_prepared_image, skipped):
    """The decision is part of the configuration hash: a run that skips the role has another hash
    than one that does not, and the hash the run computes is the one with the decision taken."""
    import dataclasses

    configurer = AnsibleConfigurer(work_dir=str(tmp_path / "work"), use_prepared_image=use_prepared_image)
    machine = dataclasses.replace(machine, prepared=prepared)
    digest = mod.config_hash(machine, mod.tree_digest(configurer._playbook_root()),
                             configurer.playbook_variables(credentials, {}), None, skipped)
    other = mod.config_hash(machine, mod.tree_digest(configurer._playbook_root()),
                            configurer.playbook_variables(credentials, {}), None,
                            [] if skipped else ["notebook_env"])
    assert digest != other
    result = await configurer.configure(machine, credentials, {}, previous_hash=digest)
    assert result.skipped and result.config_hash == digest
    assert not (tmp_path / "work").exists()
