"""Fault cells for libvirtd under the libvirt provider (docs/reliability.md).

A private libvirtd (:class:`tests.fixtures.libvirt.LibvirtDaemon` with ``private=True``: its
own mount namespace, state and socket; any system libvirtd is never touched) is restarted,
frozen (SIGSTOP) and stopped by the PID the fixture started. Two things run against it:

* ``kept``: one domain made by the provider (in this process) before any fault and kept
  through all of them. The guest is not waited for (a boot under emulation costs minutes):
  what must survive is its QEMU process (same PID), the domain (running, as libvirt reports
  it after the fault) and QEMU's SSH forward (it accepts connections);
* one hub whose MultipleSpawner has a libvirt VM template with a ``ready_timeout`` of 3 s: a
  spawn whose libvirt step works fails at the wait step ("The wait step failed"), after the
  provider made and started the domain and then removed it; one whose libvirt step fails says
  so ("The create step failed: the libvirt daemon ..."). Each such probe costs a QEMU start,
  not a boot.

The cells run in this order: hang, refuse, restart (the last one destroys ``kept``).
"""

import asyncio
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path

import libvirt
import pytest

from multiplespawner.providers import ProviderError
from multiplespawner.providers.identity import HUB_LABEL
from multiplespawner.providers.libvirt import LibvirtProvider
from tests.fixtures.faults import hung, refusing, restart
from tests.fixtures.hub import Hub
from tests.fixtures.libvirt import LibvirtDaemon
from tests.fixtures.machines import MachineCounter
from tests.fixtures.procs import wait_until
from tests.integration.test_faults import hub_latency_during, kept_server
from tests.integration.test_libvirt_provider import _spec
from tests.integration.test_machines_docker import machine_catalogue

#: the provider's bound on any one libvirt call in these cells (seconds)
LIBVIRT_TIMEOUT = 8
NAMED = "the libvirt daemon"
PROBE_USER = "probe"


class Libvirtd:
    """The private daemon's process as a fault target (tests.fixtures.faults): ``stop()`` and
    ``start()`` stop and start libvirtd only; its domains and state stay."""

    def __init__(self, daemon: LibvirtDaemon):
        self.daemon = daemon

    @property
    def pid(self):
        return self.daemon.pid

    def stop(self):
        self.daemon.stop_daemon()

    def start(self):
        self.daemon.start_daemon()


@pytest.fixture(scope="module")
def daemon():
    daemon = LibvirtDaemon(private=True).start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def libvirtd(daemon):
    return Libvirtd(daemon)


def _private_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    path.chmod(0o711)  # QEMU's user reaches the machines' files
    return path


class Kept:
    """The domain kept running through every fault, made by a provider in this process."""

    def __init__(self, daemon, vm_image):
        self.storage = _private_dir("libvirt-faults-kept-")
        self.provider = LibvirtProvider(uri=daemon.uri, storage_dir=self.storage, timeout=LIBVIRT_TIMEOUT)
        self.spec = _spec(f"faults-kept-{uuid.uuid4().hex[:6]}", vm_image,
                          labels={HUB_LABEL: "faults-kept"})
        self.machine = asyncio.run(self.provider.create(self.spec))
        self.qemu_pid = int((Path(daemon.dir) / "run" / "qemu" / f"{self.spec.name}.pid").read_text())

    def qemu_alive(self) -> bool:
        try:
            os.kill(self.qemu_pid, 0)
            return True
        except ProcessLookupError:
            return False

    def forward_accepts(self) -> bool:
        """QEMU's SSH forward accepts a connection (QEMU itself answers; the guest may be booting)."""
        with socket.create_connection((self.machine.host, self.machine.port), timeout=5):
            return True

    def survives(self) -> None:
        """Same QEMU process, its forward answers; asks libvirt nothing (it may be down)."""
        assert self.qemu_alive(), "QEMU of the kept domain is gone"
        assert self.forward_accepts()

    def running(self) -> bool:
        """The provider lists the kept domain (on its cached connection, the first call after a
        fault) and libvirt reports it running (on a fresh connection)."""
        listed = asyncio.run(self.provider.list("faults-kept"))
        assert [m.id for m in listed] == [self.spec.name], listed
        conn = libvirt.open(self.provider.uri)
        try:
            return bool(conn.lookupByName(self.spec.name).isActive())
        finally:
            conn.close()


@pytest.fixture(scope="module")
def kept(daemon, vm_image):
    kept = Kept(daemon, vm_image)
    try:
        yield kept
    finally:
        daemon.start_daemon()  # if a cell failed while it was stopped
        asyncio.run(kept.provider.destroy(kept.spec.name))
        shutil.rmtree(kept.storage)


class ProbeHub:
    """A hub with one libvirt VM template whose spawns fail at the wait step at the latest."""

    def __init__(self, daemon, vm_image):
        self.hub_id = f"faults-{uuid.uuid4().hex[:8]}"
        self.storage = _private_dir("libvirt-faults-hub-")
        self.folder = _private_dir("libvirt-faults-catalogue-")
        self.folder.chmod(0o755)
        catalogue = self.folder / "catalogue.json"
        catalogue.write_text(json.dumps(machine_catalogue(str(vm_image), provider="libvirt", name="vm")))
        options = {"libvirt": {"uri": daemon.uri, "storage_dir": str(self.storage), "timeout": LIBVIRT_TIMEOUT}}
        self.hub = Hub(f"""
c.JupyterHub.spawner_class = "multiple"
c.MultipleSpawner.catalogue_paths = [{str(catalogue)!r}]
c.MultipleSpawner.catalogue_check_interval = 0
c.MachineOrchestrator.hub_id = {self.hub_id!r}
c.MachineOrchestrator.ready_timeout = 3
c.MachineOrchestrator.provider_options = {options!r}
c.Spawner.poll_interval = 3
""")
        self.libvirt = (daemon.uri, self.storage)

    def counter(self) -> MachineCounter:
        return MachineCounter.of_hub(None, self.hub_id, self.hub, libvirt=self.libvirt)

    def probe(self) -> tuple[str, float]:
        """A spawn that fails: return the message the user sees and the seconds it took."""
        hub = self.hub
        started = time.monotonic()
        r = hub.api("POST", f"/users/{PROBE_USER}/server", json={})
        if r.status_code == 500:  # failed within the hub's slow_spawn_timeout: the answer says why
            message = r.json()["message"]
        else:
            assert r.status_code in (201, 202), r.text
            events = hub.progress(PROBE_USER)
            assert events and events[-1].get("failed"), events
            message = events[-1]["message"]
        took = time.monotonic() - started
        wait_until(lambda: hub.server_model(PROBE_USER) is None, timeout=120, message="failed server removed")
        return message, took

    def libvirt_step_works(self) -> float:
        """A probe whose libvirt step must succeed (it fails later, waiting for SSH); its seconds."""
        message, took = self.probe()
        assert "The wait step failed" in message, message
        assert NAMED not in message, message
        return took

    def nothing_left(self) -> None:
        left = self.counter().wait_for_nothing_left()
        assert left == {}, f"left behind: {left}"


@pytest.fixture(scope="module")
def probe_hub(daemon, vm_image):
    ph = ProbeHub(daemon, vm_image)
    with kept_server(ph.hub, lambda: ph.hub.start()):
        ph.hub.create_user(PROBE_USER)
        ph.libvirt_step_works()  # the hub's provider holds a connection before any fault
        ph.nothing_left()
        yield ph
    for path in (ph.storage, ph.folder):
        shutil.rmtree(path)


def spawn_during(probe_hub, kept, fault, label) -> tuple[str, float]:
    """A probe spawn within ``fault`` (the hub's API asked meanwhile), the kept domain checked
    there too; return the spawn's message and seconds."""
    with fault:
        (message, waited), slowest = hub_latency_during(probe_hub.hub, probe_hub.probe)
        kept.survives()
        made = probe_hub.counter().machine_dirs()
    print(f"libvirtd {label}: spawn failed after {waited:.2f} s ({message!r}); "
          f"slowest hub API answer {slowest:.2f} s")
    assert slowest < 2.0, slowest  # the hub's event loop stayed free
    assert made == [], made
    assert "The create step failed" in message and NAMED in message, message
    return message, waited


def recovers(probe_hub, kept, label) -> None:
    """After a fault: nothing left of the failed spawn (also of calls that were left waiting),
    the kept domain running, and the first spawn's libvirt step works."""
    probe_hub.nothing_left()
    kept.survives()
    assert kept.running()
    took = probe_hub.libvirt_step_works()
    print(f"libvirtd {label}: afterwards the first spawn's libvirt step worked (probe {took:.2f} s)")
    probe_hub.nothing_left()


def test_libvirtd_hung_spawn_fails_bounded_naming_libvirt(probe_hub, kept, libvirtd):
    message, waited = spawn_during(probe_hub, kept, hung(libvirtd), "hung")
    assert f"did not answer within {LIBVIRT_TIMEOUT} s" in message, message
    # the create's bounded call, the clean-up's destroy (bounded too), the loaded machine's margin
    assert waited < 3 * LIBVIRT_TIMEOUT + 10, waited
    # a provider without a connection yet: opening one is bounded too (libvirt's open is not)
    fresh = LibvirtProvider(uri=kept.provider.uri, storage_dir=kept.storage, timeout=LIBVIRT_TIMEOUT)
    with hung(libvirtd):
        started = time.monotonic()
        with pytest.raises(ProviderError, match=f"did not answer within {LIBVIRT_TIMEOUT} s"):
            asyncio.run(fresh.list("faults-kept"))
        opening = time.monotonic() - started
    print(f"libvirtd hung: opening a connection gave up after {opening:.2f} s")
    assert opening < LIBVIRT_TIMEOUT + 5, opening
    recovers(probe_hub, kept, "hung")


def test_libvirtd_refusing_spawn_fails_at_once_naming_libvirt(probe_hub, kept, libvirtd):
    message, waited = spawn_during(probe_hub, kept, refusing(libvirtd), "stopped")
    assert "is not reachable right now" in message, message
    assert waited < 5, waited
    recovers(probe_hub, kept, "stopped")  # the started daemon took the running domain back


def test_libvirtd_restart_domain_survives_first_operations_succeed(probe_hub, kept, libvirtd):
    assert kept.running()  # the provider here holds a connection from before the restart
    took = restart(libvirtd)
    print(f"libvirtd restart: back after {took:.2f} s")
    # kept.running() is the first call on that connection after the restart: no failure first
    recovers(probe_hub, kept, "restarted")
    asyncio.run(kept.provider.destroy(kept.spec.name))
    wait_until(lambda: not kept.qemu_alive(), timeout=30, message="kept QEMU stopped")
    assert list(kept.storage.iterdir()) == []
    assert asyncio.run(kept.provider.list("faults-kept")) == []
