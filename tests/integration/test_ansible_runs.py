"""AnsibleConfigurer runs that need no machine: a timeout stops every process of the run, so does
the exit of a process (a hub) with a run still going, and
a machine that does not answer gives a clear error. Real ansible-playbook processes; the
timeout case runs a local play (connection: local) from its own playbook directory."""

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multiplespawner.configurers import AnsibleConfigurer, ConfigurerError
from multiplespawner.machines.credentials import CredentialStore
from multiplespawner.providers.base import Machine
from tests.fixtures.net import free_port


@pytest.fixture
async def credentials(tmp_path):
    store = CredentialStore(base_dir=str(tmp_path / "keys"))
    creds = await store.create("runs")
    yield creds
    await store.remove(creds)


def local_play(tmp_path, credentials, tasks: str, timeout: float):
    """A configurer whose playbook is one play of ``tasks`` (YAML lines) run on this host
    (``connection: local``, from its own playbook directory), its empty work directory, and the
    machine record to pass it."""
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "play.yml").write_text(
        "- name: A local play\n"
        "  hosts: all\n"
        "  gather_facts: false\n"
        "  vars:\n"
        "    ansible_connection: local\n"  # play vars beat the configurer's inventory
        "  tasks:\n" + tasks
    )
    work = tmp_path / "work"
    work.mkdir()
    configurer = AnsibleConfigurer(
        playbook_dir=str(playbooks), playbook="play.yml", work_dir=str(work), timeout=timeout,
        remote_python="/usr/bin/python3",
    )
    machine = Machine(id="local", provider="none", host="127.0.0.1", port=22, ssh_user="root",
                      host_public_key=credentials.host_public_key)
    return configurer, work, machine


def processes_with(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


async def test_timeout_kills_the_run_and_its_workers(tmp_path, credentials):
    marker = f"{random.randint(100000, 999999)}.5"
    configurer, work, machine = local_play(
        tmp_path, credentials,
        "    - name: Wait forever\n"
        f"      ansible.builtin.command: sleep {marker}\n"
        "      changed_when: false\n",
        timeout=8,
    )

    async def sleeping():
        while not processes_with(f"sleep {marker}"):
            await asyncio.sleep(0.2)

    run = asyncio.ensure_future(configurer.configure(machine, credentials, {}))
    await asyncio.wait_for(sleeping(), 60)  # the task's command runs in Ansible's worker
    with pytest.raises(ConfigurerError, match=r"took longer than 8s \(last task: none\)"):
        await asyncio.wait_for(run, 60)
    for _ in range(50):
        if not processes_with(f"sleep {marker}") and not processes_with(str(work)):
            break
        await asyncio.sleep(0.2)
    assert processes_with(f"sleep {marker}") == []
    assert processes_with(str(work)) == []
    assert list(work.iterdir()) == []


async def test_machine_that_does_not_answer(tmp_path, credentials):
    port = free_port("127.0.0.1")  # nothing listens there
    machine = Machine(id="gone", provider="none", host="127.0.0.1", port=port, ssh_user="admin",
                      host_public_key=credentials.host_public_key)
    work = tmp_path / "work"
    work.mkdir()
    messages = []
    with pytest.raises(ConfigurerError) as info:
        await AnsibleConfigurer(work_dir=str(work), timeout=120).configure(
            machine, credentials, {"notebook_user_name": "alice"}, messages.append
        )
    message = str(info.value)
    assert f"configuring 127.0.0.1:{port} failed at task 'Create the notebook environment'" in message
    assert "Connection refused" in message
    # the Python version checks are skipped without a wheel directory; the first task that
    # needs the machine finds it unreachable
    assert messages[-1] == "TASK [Create the notebook environment] unreachable"
    assert all(m.endswith("] skipped") for m in messages[:-1]), messages
    assert list(work.iterdir()) == []


async def test_variables_are_data_never_templates(tmp_path, credentials):
    """A server name or user name substituted into a template's options may carry Jinja; the
    playbook receives it literally (Ansible does not run the lookup), and no variable appears on
    any process's command line."""
    marker = tmp_path / "lookup-ran"
    out = tmp_path / "out.txt"
    probe = "{{ lookup('pipe', 'touch " + str(marker) + "') }}{% if true %}x{% endif %}"
    configurer, work, machine = local_play(
        tmp_path, credentials,
        "    - name: Write the probe\n"
        f"      ansible.builtin.copy: {{content: '{{{{ probe }}}}|{{{{ nested.names | join(\",\") }}}}', dest: {str(out)!r}}}\n",
        timeout=120,
    )
    seen_in_argv = []

    async def watch():
        while True:
            seen_in_argv.extend(processes_with("lookup('pipe'"))
            await asyncio.sleep(0.05)

    watcher = asyncio.ensure_future(watch())
    try:
        await configurer.configure(machine, credentials, {"probe": probe, "nested": {"names": [probe, "", "b"]}})
    finally:
        watcher.cancel()
    assert out.read_text() == f"{probe}|{probe},,b"
    assert not marker.exists()
    assert seen_in_argv == []
    assert list(work.iterdir()) == []


#: a process that starts a configure whose task sleeps, then stops its loop with the configure
#: still pending and exits, as a hub stopping with spawns still configuring machines does
#: (JupyterHub stops its loop; nothing cancels the spawns when cleanup_servers is off)
EXIT_MID_RUN = """
import asyncio, sys, time
from pathlib import Path
from multiplespawner.machines.credentials import CredentialStore
from tests.integration.test_ansible_runs import local_play, processes_with

tmp, marker = Path(sys.argv[1]), sys.argv[2]

async def main():
    creds = await CredentialStore(base_dir=str(tmp / "keys")).create("runs")
    configurer, _, machine = local_play(tmp, creds, "    - name: Wait\\n"
        f"      ansible.builtin.command: sleep {marker}\\n      changed_when: false\\n", timeout=900)
    asyncio.ensure_future(configurer.configure(machine, creds, {}))
    while not processes_with(f"sleep {marker}"):
        await asyncio.sleep(0.2)
    asyncio.get_running_loop().stop()

loop = asyncio.new_event_loop()
loop.create_task(main())
loop.run_forever()
print("STOPPED", time.time(), flush=True)
"""


def test_a_process_exiting_mid_run_stops_the_playbook_instead_of_waiting_for_it(tmp_path):
    """The exit joins the configurer's pool threads; without the exit hook it waited for the
    playbook to end (here a 600 s task)."""
    marker = f"600.{random.randint(100000, 999999)}"  # the task's seconds, unique to this run
    proc = subprocess.Popen([sys.executable, "-c", EXIT_MID_RUN, str(tmp_path), marker],
                            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("STOPPED"), line
        stopped_at = float(line.split()[1])
        proc.wait(timeout=60)
        exited_after = time.time() - stopped_at
    finally:
        if proc.poll() is None:  # (the failure this test is for) then what it left running
            proc.kill()
            proc.wait()
            for found in processes_with(marker) + processes_with(str(tmp_path)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(found.split(":")[0]), signal.SIGKILL)
    print(f"the process exited {exited_after:.1f} s after its loop stopped with the playbook running")
    assert exited_after < 20, exited_after
    for _ in range(50):
        if not processes_with(f"sleep {marker}"):
            break
        time.sleep(0.2)
    assert processes_with(f"sleep {marker}") == []
