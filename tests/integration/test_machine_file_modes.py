"""Files the suite writes for machines are readable by their owner only.

Per-server SSH keys and certificates on the hub, the keys a container machine receives, the
notebook's log and launch record on the machine, a libvirt machine's disk overlay and cloud-init
seed (it holds the machine's private host key): files 0600, directories without read access for
group and others (0700; a libvirt machine's directory is 0711 so that QEMU's user reaches the
files by name). Each path is made for real: a container machine spawned through a hub, and the
libvirt provider creating a machine whose QEMU cannot start (no VM boots here).
"""

import json
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import asyncssh
import pytest

from multiplespawner.providers import MachineSpec, ProviderError, Resources
from multiplespawner.providers import libvirt as libvirt_provider
from multiplespawner.providers.identity import HUB_LABEL
from multiplespawner.providers.libvirt import LibvirtProvider
from tests.fixtures.libvirt import qemu_port_taken
from tests.integration.test_machines_docker import USER, MachineHub, machine_catalogue

pytestmark = pytest.mark.slow


def modes_under(root: Path) -> dict[str, int]:
    """Permission bits of ``root`` and of everything below it, by path relative to ``root``."""
    modes = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        modes[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return modes


def readable_by_others(modes: dict[str, int]) -> dict[str, str]:
    """The entries of ``modes`` that group or others may read or write, as octal strings."""
    return {path: oct(mode) for path, mode in modes.items() if mode & 0o066}


def test_container_machine_keys_and_records_are_private(hub_factory, docker_engine, prepared_image, tmp_path):
    tmp_path.chmod(0o755)
    mh = MachineHub(hub_factory, docker_engine, tmp_path, machine_catalogue(prepared_image))
    hub = mh.hub
    model = hub.spawn(USER, timeout=900)

    # on the hub: one 0700 directory per server holding its client key (and public half)
    credentials = Path(model["state"]["machine"]["credentials"]["directory"])
    store = credentials.parent
    modes = modes_under(store)
    assert modes["."] == 0o700 and modes[credentials.name] == 0o700, modes
    assert modes[f"{credentials.name}/id_ed25519"] == 0o600, modes
    assert readable_by_others(modes) == {}, modes

    # on the machine: the keys the provider put there, the notebook's log and launch record
    (container,) = mh.counter().containers()
    home = f"/home/{USER}/.jupyterhub-cloudssh"
    code, out = container.exec_run(["find", "/etc/machine", home, "-printf", "%m %p\\n"])
    assert code == 0, out
    found = dict(reversed(line.split(" ", 1)) for line in out.decode().splitlines())
    assert found["/etc/machine/ssh_host_ed25519_key"] == "600", found
    assert found["/etc/machine/authorized_keys"] == "600", found
    assert found[home] == "700" and found[f"{home}/default.log.launch"] == "600", found
    assert {p: m for p, m in found.items() if p.startswith(home) and int(m, 8) & 0o066} == {}, found

    hub.stop_server(USER)
    assert not credentials.exists()


def _stub_image(directory: Path) -> Path:
    """An image directory libvirt can be given but QEMU cannot boot (an empty kernel)."""
    directory.mkdir(mode=0o755)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(directory / "disk.qcow2"), "64M"], check=True)
    (directory / "vmlinuz").write_bytes(b"")
    (directory / "initrd.img").write_bytes(b"")
    (directory / "image.json").write_text(json.dumps({"cmdline": "console=ttyS0"}))
    return directory


async def test_libvirt_overlay_and_seed_are_private(libvirt_uri, libvirt_storage, monkeypatch):
    """The files exist from the overlay's creation until QEMU fails to start (an empty kernel,
    and its SSH forward's port is taken): their modes are recorded at the domain definition."""
    tag = uuid.uuid4().hex[:6]
    image = _stub_image(libvirt_storage / f"image-{tag}")  # where QEMU's user can read it
    storage = libvirt_storage / f"modes-{tag}"
    provider = LibvirtProvider(uri=libvirt_uri, storage_dir=storage)
    client_public = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    spec = MachineSpec(
        name=f"pytest-modes-{uuid.uuid4().hex[:6]}",
        deployment={"name": "stub", "provider": "libvirt", "image": str(image)},
        resources=Resources(cpu=1, memory_mb=512),
        ssh_user="hubadmin",
        authorized_key=client_public,
        host_key_private=asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode(),
        labels={HUB_LABEL: "pytest-modes"},
    )
    seen = {}
    domain_xml = libvirt_provider._domain_xml

    def record_modes(*args):
        seen.update(modes_under(storage))
        return domain_xml(*args)

    monkeypatch.setattr(libvirt_provider, "_domain_xml", record_modes)
    with qemu_port_taken(monkeypatch):
        with pytest.raises(ProviderError, match=f"could not create virtual machine {spec.name}"):
            await provider.create(spec)

    assert seen[f"{spec.name}/overlay.qcow2"] == 0o600, seen
    assert seen[f"{spec.name}/seed.iso"] == 0o600, seen
    assert seen[f"{spec.name}/console.log"] == 0o600, seen
    assert readable_by_others(seen) == {}, seen
    assert list(storage.iterdir()) == []  # and the failed create removed them
    shutil.rmtree(image)
