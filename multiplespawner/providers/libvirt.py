"""Virtual machines through libvirt: one QEMU guest per notebook server.

A libvirt deployment in the catalogue::

    {"name": "debian-vm", "provider": "libvirt",
     "image": "/var/lib/jupyterhub-multiplespawner/images/<hash>",   # from `python -m images.vm build`
     "disk_gb": 8,                 # optional: the machine's disk size (at least the image's)
     "restrict_network": false}    # optional: true cuts the guest off from every network

``image`` is a directory made by ``images/vm`` (``disk.qcow2``, ``vmlinuz``, ``initrd.img``,
``image.json``); it must be readable by the user libvirt runs QEMU as. The image's record of
what its build prepared (``image.json``'s ``prepared``: the notebook environment's path, Python
and exact package list) is handed to each machine as :attr:`Machine.prepared`, for the
configurer to compare with what it would install (docs/configuring-machines.md).

What :meth:`LibvirtProvider.create` makes for machine ``NAME``, and :meth:`destroy` removes:

* ``<storage_dir>/NAME/`` (0711: QEMU's user must reach the files in it, nobody may list it)
  holding only files of mode 0600 (libvirt hands them to QEMU's user while the guest runs):
* ``<storage_dir>/NAME/overlay.qcow2``: a copy-on-write overlay whose backing file is the
  image's disk, so the image is shared and never written;
* ``<storage_dir>/NAME/seed.iso``: a cloud-init NoCloud seed (volume label ``cidata``) with the
  login account ``spec.ssh_user`` (``spec.authorized_key`` only, no password, passwordless sudo
  so the configurer can prepare the machine) and the SSH host key ``spec.host_key_private``;
  the image has no host key of its own and generates none, so the machine presents exactly the
  key the caller pinned;
* ``<storage_dir>/NAME/console.log``: the guest's serial console, quoted when it fails to boot;
* the libvirt domain ``NAME``: type ``qemu`` (works without KVM), the image's kernel booted
  directly, ``ceil(spec.resources.cpu)`` vCPUs and ``memory_mb`` MiB, QEMU user-mode
  networking with one forward ``listen_host:<free port>`` -> guest port 22, and its labels,
  SSH endpoint and pinned host key in the domain's ``<metadata>`` so that :meth:`list` finds
  it again after a hub restart.

The provider must run on the libvirt host (it writes the overlay and seed there, and the SSH
forward listens on that host's ``listen_host``). libvirt calls and subprocesses run in the
provider's bounded thread pool, never on the event loop.

When libvirtd fails (see docs/reliability.md): no libvirt call waits longer than about
``timeout`` seconds. Opening the connection is bounded by a watchdog; calls on an open
connection by libvirt's keepalive (a process-wide libvirt event loop thread answers and sends
the keepalive messages), which also finds a connection that a restarted daemon closed, so the
next call opens a fresh one. A call that still meets a closed connection is retried once on a
fresh one where that is safe (look-ups, listing, destroying). Failures name the daemon: "the
libvirt daemon at URI did not answer within N s" or "... is not reachable right now".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from .base import Machine, MachineSpec, Provider, ProviderError, wait_for_ssh
from .identity import HUB_LABEL, check_labels, cloud_init_user_data, public_host_key

#: XML namespace of the provider's ``<metadata>`` element in the domain
METADATA_NS = "https://jupyterhub-multiplespawner.readthedocs.io/xmlns/libvirt-machine/1"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
_MIN_MEMORY_MB = 256
# image directory layout (see images/vm/build.py)
_DISK, _KERNEL, _INITRD, _MANIFEST = "disk.qcow2", "vmlinuz", "initrd.img", "image.json"


class LibvirtProvider(Provider):
    """Create, list and destroy QEMU virtual machines through libvirt (see module doc).

    ``uri``: the libvirt connection (default ``qemu:///system``). ``storage_dir``: where the
    per-machine overlay, seed and console log live; it is created mode 0711 so QEMU (running
    as its own user) can reach the files libvirt hands it. ``listen_host``: the address SSH
    forwards listen on; keep it a loopback address unless the hub runs elsewhere.
    ``timeout``: seconds any one libvirt call may wait for the daemon (connecting, or an
    answer on an open connection: its keepalive gives up after about that long) before it
    fails with :class:`ProviderError` naming the daemon.
    ``log``: a :class:`logging.Logger` (e.g. the spawner's ``self.log``).
    """

    name = "libvirt"

    def __init__(self, uri: str = "qemu:///system",
                 storage_dir: str | os.PathLike = "/var/lib/jupyterhub-multiplespawner/libvirt",
                 listen_host: str = "127.0.0.1", timeout: float = 30, log=None):
        self.uri = uri
        self.storage_dir = Path(storage_dir)
        self.listen_host = listen_host
        if not timeout > 0:
            raise ProviderError("the libvirt provider's timeout must be a positive number of seconds")
        self.timeout = float(timeout)
        self.log = log or logging.getLogger(__name__)
        self._conn = None
        self._conn_lock = threading.Lock()

    # -- the provider interface ------------------------------------------------------------

    async def create(self, spec: MachineSpec) -> Machine:
        """Define and start the domain; return once QEMU runs (the guest is still booting).

        If the caller is cancelled, the thread makes nothing more once its current step ends,
        and whatever it made is removed.
        """
        abandoned = threading.Event()
        job = asyncio.ensure_future(self.run_blocking(self._create, spec, abandoned))
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            abandoned.set()
            # the thread goes on (each of its libvirt calls is bounded); once it is done,
            # remove whatever it made
            with contextlib.suppress(Exception):
                await job
            with contextlib.suppress(Exception):
                await self.destroy(spec.name)
            raise

    async def wait_ready(self, machine: Machine, timeout: float) -> None:
        """Return once the guest's sshd presents the pinned host key; fail early if it stops."""
        probe = asyncio.ensure_future(
            wait_for_ssh(machine.host, machine.port, machine.host_public_key, timeout)
        )
        try:
            while True:
                done, _ = await asyncio.wait({probe}, timeout=3)
                if done:
                    try:
                        probe.result()
                    except ProviderError as e:
                        raise ProviderError(f"{e}\n{await self._console_tail(machine.id)}") from e
                    return
                if not await self.run_blocking(self._is_running, machine.id):
                    raise ProviderError(
                        f"virtual machine {machine.id} stopped while booting\n"
                        f"{await self._console_tail(machine.id)}"
                    )
        finally:
            probe.cancel()

    async def destroy(self, machine_id: str) -> None:
        """Stop and undefine the domain, remove its overlay, seed and log; idempotent."""
        await self.run_blocking(self._destroy, machine_id)

    async def list(self, hub_id: str) -> list[Machine]:
        """Machines whose domain metadata carries ``HUB_LABEL == hub_id`` (running or not)."""
        machines = await self.run_blocking(self._list_all)
        return [m for m in machines if m.labels.get(HUB_LABEL) == hub_id]

    # -- blocking implementation (runs in the thread pool) ---------------------------------

    def _connection(self):
        """The cached connection, or a new one if there is none or it is no longer alive."""
        if not self._conn_lock.acquire(timeout=self.timeout):  # another thread is connecting
            raise self._no_answer()
        try:
            if self._conn is None or not self._conn.isAlive():
                self._conn = None
                self._conn = self._open()
            return self._conn
        finally:
            self._conn_lock.release()

    def _open(self):
        """A new connection with keepalive; opening is bounded by ``timeout``.

        libvirt's own open cannot be interrupted and waits forever for a frozen daemon: it runs
        in a helper thread, which closes the connection itself if it arrives after the caller
        gave up.
        """
        import libvirt

        _start_event_loop()
        outcome = {}
        lock = threading.Lock()

        def open_():
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError as e:
                conn, outcome["error"] = None, e
            with lock:
                if "gave_up" in outcome and conn is not None:
                    with contextlib.suppress(libvirt.libvirtError):
                        conn.close()
                outcome["conn"] = conn

        opener = threading.Thread(target=open_, name="libvirt-open", daemon=True)
        opener.start()
        opener.join(self.timeout)
        with lock:
            if "conn" not in outcome:
                outcome["gave_up"] = True
                raise self._no_answer()
        if outcome["conn"] is None:
            raise ProviderError(f"the libvirt daemon at {self.uri} is not reachable right now: "
                                f"{outcome['error']}") from outcome["error"]
        conn = outcome["conn"]
        try:
            # a ping every interval; after `count` unanswered ones the connection is closed
            # and the call waiting on it fails: about `timeout` seconds in all
            interval = max(1, int(self.timeout / 4))
            conn.setKeepAlive(interval, 3)
        except libvirt.libvirtError as e:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
            raise self._failed(e) from e
        return conn

    def _no_answer(self) -> ProviderError:
        return ProviderError(f"the libvirt daemon at {self.uri} did not answer within "
                             f"{self.timeout:g} s; please try again in a few minutes")

    def _failed(self, error) -> ProviderError:
        """A ProviderError naming the daemon for a libvirt error of the connection itself."""
        if "keepalive" in str(error):
            return self._no_answer()
        return ProviderError(f"lost the connection to the libvirt daemon at {self.uri}: {error}")

    def _on_connection(self, step):
        """``step(conn)``; run once more on a fresh connection if the first one turns out to
        be closed (a restarted daemon). Only for steps that are safe to repeat."""
        try:
            return step(self._connection())
        except Exception as e:
            if not _connection_lost(e):
                raise
            if "keepalive" in str(e):  # the daemon does not answer: a retry would wait again
                raise self._failed(e) from e
            self.log.info("libvirt: the connection to %s was closed (%s); reconnecting", self.uri, e)
            with self._conn_lock:
                self._conn = None
        try:
            return step(self._connection())
        except Exception as e:
            if _connection_lost(e):
                raise self._failed(e) from e
            raise

    def _machine_dir(self, name: str) -> Path:
        if not _NAME.match(name):
            raise ProviderError(
                f"invalid machine name {name!r}: use 1-63 lowercase letters, digits and '-'"
            )
        return self.storage_dir / name

    def _create(self, spec: MachineSpec, abandoned: threading.Event | None = None) -> Machine:
        import libvirt

        image = _check_image(spec.deployment)
        directory = self._machine_dir(spec.name)
        vcpus, memory_mb = _check_resources(spec)
        check_labels(spec.labels)
        host_key_public = public_host_key(spec.host_key_private)
        if not host_key_public.startswith("ssh-ed25519 "):
            raise ProviderError("the machine's host key must be ed25519 (the image's sshd uses that one)")
        if spec.ssh_user == "root" or not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", spec.ssh_user):
            raise ProviderError(f"invalid login account {spec.ssh_user!r} for a virtual machine "
                                "(a lowercase Unix user name other than root)")
        if self._on_connection(lambda conn: _domain(conn, spec.name)) is not None:
            raise ProviderError(f"a virtual machine named {spec.name} already exists")
        if abandoned is not None and abandoned.is_set():
            raise ProviderError(f"creating virtual machine {spec.name} was cancelled")
        conn = self._connection()
        self.storage_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
        try:
            directory.mkdir(mode=0o711)
        except FileExistsError:
            raise ProviderError(f"{directory} already exists (left by an earlier machine?)") from None
        port = _free_port(self.listen_host)
        machine = Machine(id=spec.name, provider=self.name, host=self.listen_host, port=port,
                          ssh_user=spec.ssh_user, host_public_key=host_key_public,
                          labels=dict(spec.labels), prepared=_image_prepared(image))
        domain = None
        try:
            overlay = directory / "overlay.qcow2"
            _create_private(overlay)  # the guest's disk: its users' files
            _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image / _DISK),
                  str(overlay), *_overlay_size(spec.deployment, image / _DISK)])
            seed = directory / "seed.iso"
            _make_seed(seed, spec, host_key_public)
            # the serial console shows boot output (host key fingerprints, cloud-init): made
            # owner-only before QEMU appends to it (libvirt hands it to QEMU's user)
            _create_private(directory / "console.log")
            xml = _domain_xml(spec, machine, image, directory, vcpus, memory_mb)
            domain = conn.defineXML(xml)
            domain.create()
        except Exception as e:
            self.log.warning("libvirt: creating %s failed, removing what was made: %s", spec.name, e)
            if domain is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    if domain.isActive():
                        domain.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    domain.undefine()
            shutil.rmtree(directory, ignore_errors=True)
            if isinstance(e, ProviderError):
                raise
            if _connection_lost(e):
                raise self._failed(e) from e
            raise ProviderError(f"could not create virtual machine {spec.name}: {e}") from e
        self.log.info("libvirt: started %s (%d vCPU, %d MiB), SSH on %s:%d",
                      spec.name, vcpus, memory_mb, machine.host, machine.port)
        return machine

    def _destroy(self, name: str) -> None:
        directory = self._machine_dir(name)
        self._on_connection(lambda conn: self._destroy_domain(conn, name))
        shutil.rmtree(directory, ignore_errors=True)

    def _destroy_domain(self, conn, name: str) -> None:
        import libvirt

        domain = _domain(conn, name)
        if domain is not None:
            if _metadata(domain) is None:
                raise ProviderError(f"refusing to destroy {name}: it was not made by this provider")
            for step in (domain.destroy, domain.undefine):
                try:
                    step()
                except libvirt.libvirtError as e:
                    if _connection_lost(e):
                        raise
                    if e.get_error_code() not in (libvirt.VIR_ERR_OPERATION_INVALID,
                                                  libvirt.VIR_ERR_NO_DOMAIN):
                        raise ProviderError(f"libvirt: destroying {name} failed: {e}") from e
            self.log.info("libvirt: destroyed %s", name)

    def _list_all(self) -> list[Machine]:
        def machines(conn):
            found = []
            for domain in conn.listAllDomains(0):
                meta = _metadata(domain)
                if meta is not None:
                    found.append(_machine_from_metadata(domain.name(), self.name, meta))
            return found

        return self._on_connection(machines)

    def _is_running(self, name: str) -> bool:
        def running(conn):
            domain = _domain(conn, name)
            return domain is not None and bool(domain.isActive())

        return self._on_connection(running)

    async def _console_tail(self, name: str, lines: int = 25) -> str:
        path = self._machine_dir(name) / "console.log"
        text = await self.run_blocking(
            lambda: path.read_text(errors="replace") if path.exists() else "(no console output)"
        )
        return "--- console ---\n" + "\n".join(text.splitlines()[-lines:])


# -- helpers --------------------------------------------------------------------------------

_event_loop_lock = threading.Lock()
_event_loop_started = False


def _start_event_loop() -> None:
    """Run libvirt's default event loop in a daemon thread, once per process.

    Keepalive needs it: the thread sends the pings, notices unanswered ones and a connection
    the daemon closed (``isAlive()`` then turns false). It must be registered before the
    connections that use it are opened.
    """
    global _event_loop_started
    import libvirt

    with _event_loop_lock:
        if _event_loop_started:
            return
        # errors reach the caller as exceptions; libvirt's own stderr printing only adds noise
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        libvirt.virEventRegisterDefaultImpl()

        def run():
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


def _connection_lost(error) -> bool:
    """True for a libvirt error of the connection itself (closed, broken, keepalive timeout)."""
    import libvirt

    return isinstance(error, libvirt.libvirtError) and error.get_error_domain() == libvirt.VIR_FROM_RPC


def _domain(conn, name: str):
    """The domain ``name`` on ``conn``, or None if there is none."""
    import libvirt

    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        if _connection_lost(e):
            raise
        raise ProviderError(f"libvirt: looking up {name} failed: {e}") from e


def _check_image(deployment: dict) -> Path:
    image = deployment.get("image")
    if not image:
        raise ProviderError(f"libvirt deployment {deployment.get('name')!r} names no image")
    path = Path(image)
    missing = [n for n in (_DISK, _KERNEL, _INITRD, _MANIFEST) if not (path / n).is_file()]
    if missing:
        raise ProviderError(f"virtual machine image {path} is incomplete or missing "
                            f"({', '.join(missing)}); build it with `python -m images.vm build`")
    return path


def _image_prepared(image: Path) -> dict:
    """The image's record of what its build prepared (image.json ``prepared``; {} if none).

    An image built before the record existed, or an unreadable record, gives {}: the configurer
    then prepares everything, as for any plain machine.
    """
    try:
        prepared = json.loads((image / _MANIFEST).read_text()).get("prepared")
    except (OSError, ValueError, AttributeError):
        return {}
    return prepared if isinstance(prepared, dict) else {}


def _check_resources(spec: MachineSpec) -> tuple[int, int]:
    resources = spec.resources
    if resources.gpus:
        raise ProviderError("the libvirt provider cannot give a virtual machine GPUs")
    if resources.memory_mb < _MIN_MEMORY_MB:
        raise ProviderError(f"a virtual machine needs at least {_MIN_MEMORY_MB} MiB of memory")
    return max(1, math.ceil(resources.cpu)), int(resources.memory_mb)


def _overlay_size(deployment: dict, base: Path) -> list[str]:
    """``qemu-img create`` size argument for the deployment's ``disk_gb`` ([] = the image's)."""
    disk_gb = deployment.get("disk_gb")
    if disk_gb is None:
        return []
    info = subprocess.run(["qemu-img", "info", "--output=json", "-U", str(base)],
                          capture_output=True, text=True)
    if info.returncode != 0:
        raise ProviderError(f"cannot read virtual machine image {base}: {info.stderr.strip()}")
    base_bytes = json.loads(info.stdout)["virtual-size"]
    if not isinstance(disk_gb, int) or disk_gb * 2**30 < base_bytes:
        raise ProviderError(f"disk_gb must be a whole number of GiB, at least the image's "
                            f"{math.ceil(base_bytes / 2**30)}")
    return [f"{disk_gb}G"]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _run(argv) -> None:
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        raise ProviderError(f"{argv[0]} failed: {(result.stderr or result.stdout).strip()[-500:]}")


def _create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 (it must not exist yet).

    ``qemu-img create`` and ``genisoimage`` write into an existing file and keep its mode, so
    the file is never readable by other users, whatever the umask.
    """
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))


def _make_seed(path: Path, spec: MachineSpec, host_key_public: str) -> None:
    """Write the NoCloud seed ISO (mode 0600: it holds the private host key)."""
    user_data = cloud_init_user_data(spec.ssh_user, spec.authorized_key, spec.host_key_private,
                                     host_key_public)
    user_data += "manage_etc_hosts: true\n"  # the hostname resolves (sudo complains otherwise)
    meta_data = {"instance-id": spec.name, "local-hostname": spec.name}
    with tempfile.TemporaryDirectory(prefix="seed-", dir=path.parent) as tmp:
        (Path(tmp) / "user-data").write_text(user_data)
        (Path(tmp) / "meta-data").write_text(yaml.safe_dump(meta_data))
        _create_private(path)
        _run(["genisoimage", "-quiet", "-output", str(path), "-volid", "cidata",
              "-joliet", "-rock", f"{tmp}/user-data", f"{tmp}/meta-data"])


def _domain_xml(spec: MachineSpec, machine: Machine, image: Path, directory: Path,
                vcpus: int, memory_mb: int) -> str:
    ET.register_namespace("qemu", QEMU_NS)
    ET.register_namespace("multiplespawner", METADATA_NS)
    manifest = json.loads((image / _MANIFEST).read_text())
    domain = ET.Element("domain", type="qemu")
    ET.SubElement(domain, "name").text = spec.name
    ET.SubElement(domain, "description").text = "notebook server machine (jupyterhub-multiplespawner)"
    meta = ET.SubElement(ET.SubElement(domain, "metadata"), f"{{{METADATA_NS}}}machine")
    for key, value in sorted(machine.labels.items()):
        ET.SubElement(meta, f"{{{METADATA_NS}}}label", key=str(key)).text = str(value)
    ET.SubElement(meta, f"{{{METADATA_NS}}}ssh", host=machine.host, port=str(machine.port),
                  user=machine.ssh_user, host_key=machine.host_public_key)
    ET.SubElement(domain, "memory", unit="MiB").text = str(memory_mb)
    ET.SubElement(domain, "vcpu").text = str(vcpus)
    os_ = ET.SubElement(domain, "os")
    ET.SubElement(os_, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_, "kernel").text = str(image / _KERNEL)
    ET.SubElement(os_, "initrd").text = str(image / _INITRD)
    ET.SubElement(os_, "cmdline").text = manifest["cmdline"]
    ET.SubElement(ET.SubElement(domain, "features"), "acpi")
    ET.SubElement(domain, "cpu", mode="maximum")  # TCG: every feature QEMU can emulate
    ET.SubElement(domain, "on_poweroff").text = "destroy"
    ET.SubElement(domain, "on_reboot").text = "restart"
    ET.SubElement(domain, "on_crash").text = "destroy"
    devices = ET.SubElement(domain, "devices")
    for source, fmt, target, readonly in ((directory / "overlay.qcow2", "qcow2", "vda", False),
                                          (directory / "seed.iso", "raw", "vdb", True)):
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type=fmt)
        ET.SubElement(disk, "source", file=str(source))
        ET.SubElement(disk, "target", dev=target, bus="virtio")
        if readonly:
            ET.SubElement(disk, "readonly")
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(directory / "console.log"))
    ET.SubElement(serial, "target", port="0")
    rng = ET.SubElement(devices, "rng", model="virtio")  # entropy for sshd and cloud-init at boot
    ET.SubElement(rng, "backend", model="random").text = "/dev/urandom"
    ET.SubElement(devices, "memballoon", model="none")
    # libvirt 9.0 forwards ports for user-mode networking only with the passt backend; QEMU's
    # own (slirp) user networking with a host forward is passed through on its command line.
    # Those arguments come before libvirt's devices, so the NIC takes a PCI slot (30) that
    # libvirt's automatic addresses (from slot 2 up) do not reach.
    # The addresses are QEMU's defaults, written out because the image relies on them: it
    # configures eth0 statically as 10.0.2.15/24 via 10.0.2.2 with DNS on 10.0.2.3 (no DHCP
    # client at boot, see images/vm/guest/interfaces).
    netdev = (f"user,id=msnet0,net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3,"
              f"hostfwd=tcp:{machine.host}:{machine.port}-10.0.2.15:22")
    if spec.deployment.get("restrict_network"):
        netdev += ",restrict=on"
    commandline = ET.SubElement(domain, f"{{{QEMU_NS}}}commandline")
    for arg in ("-netdev", netdev, "-device", "virtio-net-pci,netdev=msnet0,bus=pci.0,addr=0x1e"):
        ET.SubElement(commandline, f"{{{QEMU_NS}}}arg", value=arg)
    return ET.tostring(domain, encoding="unicode")


def _metadata(domain):
    """The provider's metadata element of ``domain``, or None if the domain is not ours."""
    import libvirt

    try:
        text = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
    except libvirt.libvirtError as e:
        if _connection_lost(e):
            raise
        return None
    return ET.fromstring(text)


def _machine_from_metadata(name: str, provider: str, meta) -> Machine:
    # libvirt returns the element with its namespace stripped: plain <ssh/> and <label/> children
    ssh = meta.find("ssh")
    return Machine(
        id=name, provider=provider, host=ssh.get("host"), port=int(ssh.get("port")),
        ssh_user=ssh.get("user"), host_public_key=ssh.get("host_key"),
        labels={label.get("key"): label.text or "" for label in meta.findall("label")},
    )
