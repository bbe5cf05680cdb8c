"""The libvirt provider against a real libvirtd and QEMU (software emulation, no KVM).

One VM boots for the whole module (about a minute or more under emulation); the tests log in to
it, inspect it, list it and finally destroy it. Failure tests make no VM boot: they fail before
the domain exists, or when QEMU refuses to start.
"""

import asyncio
import dataclasses
import json
import socket
import subprocess
import time
import uuid

import asyncssh
import pytest

from benchmarks.common import StallMonitor
from tests.fixtures.loop_thread import blocking_calls, public_methods
from multiplespawner.providers import MachineSpec, ProviderError, Resources
from multiplespawner.providers import libvirt as libvirt_provider
from multiplespawner.providers.base import LABEL_PREFIX, wait_for_ssh
from multiplespawner.providers.identity import HUB_LABEL
from multiplespawner.providers.libvirt import LibvirtProvider
from tests.fixtures.libvirt import qemu_port_taken

pytestmark = pytest.mark.slow

HUB_ID = f"pytest-{uuid.uuid4().hex[:8]}"
BOOT_TIMEOUT = 420  # seconds; a boot under TCG on two busy shared cores takes 60-200 s


def _key_pair():
    key = asyncssh.generate_private_key("ssh-ed25519")
    return key, key.export_public_key().decode().strip()


def _spec(name, image, **changes):
    _, client_public = _key_pair()
    host_key, _ = _key_pair()
    fields = dict(
        name=name,
        deployment={"name": "debian-vm", "provider": "libvirt", "image": str(image)},
        resources=Resources(cpu=1.5, memory_mb=768),
        ssh_user="hubadmin",
        authorized_key=client_public,
        host_key_private=host_key.export_private_key().decode(),
        labels={HUB_LABEL: HUB_ID, f"{LABEL_PREFIX}.user": "alice"},
    )
    fields.update(changes)
    return MachineSpec(**fields)


def _leftovers(uri, storage, name):
    """What exists of machine ``name``: its domain, and any files in its storage directory."""
    import libvirt

    conn = libvirt.open(uri)
    try:
        domains = [d.name() for d in conn.listAllDomains(0) if d.name() == name]
    finally:
        conn.close()
    files = sorted(str(p.relative_to(storage)) for p in storage.glob(f"{name}/**/*"))
    if (storage / name).exists():
        files.insert(0, name)
    return {"domains": domains, "files": files}


@dataclasses.dataclass
class BootedVM:
    machine: object  #: the Machine create() returned
    client_key: object  #: the per-server client key (asyncssh private key)
    spec: MachineSpec
    max_stall_ms: float  #: longest event-loop stall during create and wait_ready (recorded only)
    blocking: object  #: CallRecord of libvirt and subprocess calls during create and wait_ready


@pytest.fixture(scope="module")
def provider(libvirt_uri, libvirt_storage):
    return LibvirtProvider(uri=libvirt_uri, storage_dir=libvirt_storage)


@pytest.fixture(scope="module")
def vm(provider, vm_image, libvirt_uri, artifacts_dir):
    """One booted VM for the module."""
    client_key, client_public = _key_pair()
    spec = _spec(f"pytest-vm-{uuid.uuid4().hex[:6]}", vm_image, authorized_key=client_public)
    spec.deployment["disk_gb"] = 5  # the image's disk is 3 GB

    import libvirt

    watched = [(libvirt, "open"), (subprocess, "run"),
               *public_methods(libvirt.virConnect), *public_methods(libvirt.virDomain)]

    async def boot():
        with blocking_calls(watched) as blocking:
            async with StallMonitor() as monitor:
                started = time.monotonic()
                machine = await provider.create(spec)
                created = time.monotonic()
                try:
                    await provider.wait_ready(machine, timeout=BOOT_TIMEOUT)
                except BaseException:
                    await provider.destroy(machine.id)
                    raise
        timings = {"create_s": round(created - started, 1),
                   "create_to_ssh_ready_s": round(time.monotonic() - started, 1),
                   "max_event_loop_stall_ms": round(monitor.max_stall_ms, 1)}
        return machine, timings, monitor.max_stall_ms, blocking

    machine, timings, stall_ms, blocking = asyncio.run(boot())
    (artifacts_dir / "libvirt-timings.json").write_text(json.dumps(timings) + "\n")
    print(f"\nlibvirt VM {machine.id}: {timings}")
    try:
        yield BootedVM(machine, client_key, spec, stall_ms, blocking)
    finally:
        asyncio.run(provider.destroy(machine.id))


async def _login(machine, client_key, known_host_key):
    """An SSH connection as the machine's login user; raises what asyncssh raises.

    A fresh forwarded connection was seen reset, rarely, before the SSH handshake (QEMU's
    user-mode network stack on a loaded host); that is retried, nothing else is.
    """
    known_hosts = asyncssh.import_known_hosts(f"[{machine.host}]:{machine.port} {known_host_key}\n")
    for attempt in range(3):
        try:
            return await asyncssh.connect(
                machine.host, machine.port, username=machine.ssh_user, client_keys=[client_key],
                known_hosts=known_hosts, agent_path=None, password=None,
            )
        except (ConnectionResetError, asyncssh.ConnectionLost):
            if attempt == 2:
                raise
            await asyncio.sleep(2)


async def test_login_with_the_per_server_key_and_pinned_host_key(vm):
    machine, client_key, spec = vm.machine, vm.client_key, vm.spec
    assert machine.host == "127.0.0.1"
    async with await _login(machine, client_key, machine.host_public_key) as conn:
        who = await conn.run("id -un; sudo -n id -un; hostname", check=True)
        assert who.stdout.split() == [spec.ssh_user, "root", spec.name]
        # the key the machine presents is the one the caller generated, not one made at boot
        keys = await conn.run("ls /etc/ssh/ | grep ssh_host_; sudo -n cat /etc/ssh/ssh_host_ed25519_key.pub",
                              check=True)
        assert keys.stdout.split()[:2] == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
        assert " ".join(keys.stdout.split()[2:4]) == machine.host_public_key


async def test_the_machine_carries_the_images_prepared_record(vm, vm_image):
    """Machine.prepared is the image's record of its notebook environment, and the guest holds
    the same record and that Python (what the configurer's fast path relies on)."""
    machine, client_key = vm.machine, vm.client_key
    record = json.loads((vm_image / "image.json").read_text())["prepared"]
    assert machine.prepared == record
    env = record["notebook_env"]
    assert env["path"] == "/opt/jupyterhub-notebook" and any(p.startswith("jupyterlab==") for p in env["packages"])
    async with await _login(machine, client_key, machine.host_public_key) as conn:
        result = await conn.run(
            "cat /etc/jupyterhub-multiplespawner/prepared.json; echo; "
            f"{env['python']} -c 'import platform; print(platform.python_version())'; "
            f"test -x {env['path']}/bin/jupyterhub-singleuser && echo runnable", check=True)
    guest_record, version, runnable = result.stdout.rsplit("\n", 3)[0], *result.stdout.split()[-2:]
    assert json.loads(guest_record) == record
    assert (version, runnable) == (env["python_version"], "runnable")


async def test_cpus_memory_and_disk_match_the_spec(vm):
    machine, client_key, spec = vm.machine, vm.client_key, vm.spec
    async with await _login(machine, client_key, machine.host_public_key) as conn:
        result = await conn.run("nproc; awk '/^MemTotal:/ {print $2}' /proc/meminfo;"
                                " df -B1M --output=size / | tail -1", check=True)
    cpus, mem_kib, root_mib = (int(v) for v in result.stdout.split())
    assert cpus == 2  # 1.5 CPUs round up to whole vCPUs
    # the kernel keeps some of the memory for itself; MemTotal is a little under what was given
    assert 0.8 * spec.resources.memory_mb * 1024 < mem_kib <= spec.resources.memory_mb * 1024
    # the overlay is disk_gb large and cloud-init grew the root filesystem to fill it
    assert 4500 < root_mib <= 5 * 1024, root_mib


async def test_a_wrong_pinned_host_key_is_refused(vm, provider):
    machine, client_key = vm.machine, vm.client_key
    _, other_public = _key_pair()
    with pytest.raises(ProviderError, match="host key other than the one pinned") as refused:
        await provider.wait_ready(dataclasses.replace(machine, host_public_key=other_public), timeout=30)
    # the guest's console is quoted (its tail: how far boot got varies with the host's load)
    assert "--- console ---\n" in str(refused.value)
    assert str(refused.value).split("--- console ---\n", 1)[1].strip()
    with pytest.raises(ProviderError, match="host key other than the one pinned"):
        await wait_for_ssh(machine.host, machine.port, other_public, timeout=30)
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await _login(machine, client_key, other_public)


async def test_only_the_per_server_client_key_logs_in(vm):
    machine = vm.machine
    stranger, _ = _key_pair()
    with pytest.raises(asyncssh.PermissionDenied):
        await _login(machine, stranger, machine.host_public_key)


async def test_list_finds_the_machine_after_a_restart(vm, libvirt_uri, libvirt_storage):
    machine, spec = vm.machine, vm.spec
    fresh = LibvirtProvider(uri=libvirt_uri, storage_dir=libvirt_storage)  # nothing in memory
    found = {m.id: m for m in await fresh.list(HUB_ID)}
    assert found[machine.id] == machine
    assert found[machine.id].labels == spec.labels
    assert machine.id not in {m.id for m in await fresh.list("another-hub")}


def test_no_libvirt_call_runs_on_the_event_loop(vm):
    # over create and wait_ready: libvirt calls, qemu-img and the seed image's tool, SSH probes
    calls = set(vm.blocking.calls)
    assert {"subprocess.run", "virConnect.lookupByName", "virConnect.defineXML", "virDomain.create",
            "virDomain.isActive"} <= calls, sorted(calls)
    assert vm.blocking.on_loop == [], f"blocking calls on the event loop: {sorted(set(vm.blocking.on_loop))}"


async def test_destroy_leaves_nothing_behind(vm, provider, libvirt_uri, libvirt_storage):
    machine = vm.machine
    before = _leftovers(libvirt_uri, libvirt_storage, machine.id)
    assert before["domains"] == [machine.id]
    assert {f"{machine.id}/overlay.qcow2", f"{machine.id}/seed.iso"} <= set(before["files"])
    assert (libvirt_storage / machine.id / "seed.iso").stat().st_mode & 0o077 == 0  # private host key
    await provider.destroy(machine.id)
    assert _leftovers(libvirt_uri, libvirt_storage, machine.id) == {"domains": [], "files": []}
    assert machine.id not in {m.id for m in await provider.list(HUB_ID)}
    with socket.socket() as s:  # QEMU and its SSH forward are gone
        assert s.connect_ex((machine.host, machine.port)) != 0
    await provider.destroy(machine.id)  # idempotent


async def test_create_with_a_missing_image_leaves_nothing(provider, libvirt_uri, libvirt_storage,
                                                          tmp_path):
    spec = _spec(f"pytest-noimage-{uuid.uuid4().hex[:6]}", tmp_path / "no-such-image")
    with pytest.raises(ProviderError, match="image .* is incomplete or missing"):
        await provider.create(spec)
    assert _leftovers(libvirt_uri, libvirt_storage, spec.name) == {"domains": [], "files": []}


async def test_create_asking_for_gpus_leaves_nothing(provider, vm_image, libvirt_uri,
                                                     libvirt_storage):
    spec = _spec(f"pytest-gpu-{uuid.uuid4().hex[:6]}", vm_image, resources=Resources(gpus=1))
    with pytest.raises(ProviderError, match="GPUs"):
        await provider.create(spec)
    assert _leftovers(libvirt_uri, libvirt_storage, spec.name) == {"domains": [], "files": []}


async def test_a_disk_smaller_than_the_image_leaves_nothing(provider, vm_image, libvirt_uri,
                                                             libvirt_storage):
    spec = _spec(f"pytest-smalldisk-{uuid.uuid4().hex[:6]}", vm_image)
    spec.deployment["disk_gb"] = 1  # the image's disk is 3 GB; fails after the directory exists
    with pytest.raises(ProviderError, match="disk_gb must be .* at least the image's 3"):
        await provider.create(spec)
    assert _leftovers(libvirt_uri, libvirt_storage, spec.name) == {"domains": [], "files": []}


async def test_a_cancelled_create_leaves_nothing(provider, vm_image, libvirt_uri, libvirt_storage):
    spec = _spec(f"pytest-cancel-{uuid.uuid4().hex[:6]}", vm_image)
    task = asyncio.ensure_future(provider.create(spec))
    await asyncio.sleep(0.2)  # the blocking part is under way in the thread pool
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _leftovers(libvirt_uri, libvirt_storage, spec.name) == {"domains": [], "files": []}


async def test_qemu_failing_to_start_removes_domain_overlay_and_seed(
    provider, vm_image, libvirt_uri, libvirt_storage, monkeypatch
):
    """The last step fails for real: QEMU cannot bind the SSH forward's port (taken here)."""
    spec = _spec(f"pytest-busyport-{uuid.uuid4().hex[:6]}", vm_image)
    with qemu_port_taken(monkeypatch):
        with pytest.raises(ProviderError, match=f"could not create virtual machine {spec.name}"):
            await provider.create(spec)
    assert _leftovers(libvirt_uri, libvirt_storage, spec.name) == {"domains": [], "files": []}
