"""Time from "start" to a ready lab on a libvirt virtual machine, split by phase, through a real hub.

The virtual machine row of ``time_to_lab`` on its own, repeated: one hub (MultipleSpawner, CHP)
with the ``vm-machine`` template (``virtual_machine`` on the ``libvirt`` provider, the image of
``images/vm`` under QEMU software emulation, AnsibleConfigurer with the shipped playbooks, a real
jupyterhub-singleuser with JupyterLab), spawned through the REST API 3 times (``--quick``: once),
each spawn on a fresh machine. Phases (create, wait, configure, start) come from the hub log's
timestamps of the spawner's progress messages (see ``time_to_lab.timed_spawn``); the configure
phase also records whether the configurer took the prepared-image fast path (its progress
message "the image is prepared ...").
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from pathlib import Path

from benchmarks.common import new_figure, save, summary
from benchmarks.time_to_lab import PHASES, _vm_catalogue, timed_spawn
from tests.fixtures.hub import Hub


def run(quick: bool) -> dict:
    from tests.fixtures.libvirt import LibvirtDaemon, published_vm_image

    n = 1 if quick else 3
    user = "bench"
    folder = Path(tempfile.mkdtemp(prefix="vm-ttl-bench-"))
    storage = Path(tempfile.mkdtemp(prefix="vm-ttl-bench-machines-", dir="/var/tmp"))
    storage.chmod(0o711)
    runs = []
    hub = None
    try:
        image = published_vm_image()
        with LibvirtDaemon() as daemon:
            catalogue = folder / "catalogue.json"
            catalogue.write_text(json.dumps(_vm_catalogue(image)))
            hub = Hub(f"""
c.JupyterHub.spawner_class = "multiple"
c.MultipleSpawner.catalogue_paths = [{str(catalogue)!r}]
c.MachineOrchestrator.hub_id = "bench-{secrets.token_hex(4)}"
c.MachineOrchestrator.provider_options = {{"libvirt": {{"uri": {daemon.uri!r}, "storage_dir": {str(storage)!r}}}}}
c.MachineOrchestrator.ready_timeout = 600
c.JupyterHub.log_level = "INFO"
""")
            hub.start()
            hub.create_user(user)
            for _ in range(n):
                since = len(hub.log_text())
                result = timed_spawn(hub, user, "vm-machine")
                fast = "the image is prepared" in hub.log_text()[since:]
                runs.append({"phases": result["phases"], "total": result["total"], "prepared_image_path": fast})
                hub.stop_server(user, timeout=300)
            hub.remove()
            hub = None
    finally:
        if hub is not None:
            hub.remove()
        shutil.rmtree(storage, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "n": n,
        "image": str(image),
        "runs": runs,
        "phases": {p: summary([r["phases"][p] for r in runs]) for p in PHASES
                   if all(p in r["phases"] for r in runs)},
        "total": summary([r["total"] for r in runs]),
    }


def plot(result: dict, path: Path) -> None:
    fig, (ax,) = new_figure("Libvirt VM (QEMU TCG): time to lab by phase, per spawn (seconds)")
    for i, one in enumerate(result["runs"]):
        left = 0.0
        for j, phase in enumerate(PHASES):
            if phase in one["phases"]:
                ax.barh(i, one["phases"][phase], left=left, color=f"C{j}", label=phase if i == 0 else None)
                left += one["phases"][phase]
    ax.set_yticks(range(len(result["runs"])), [f"spawn {i + 1}" for i in range(len(result["runs"]))])
    ax.set_xlabel("seconds")
    ax.legend()
    save(fig, path)
