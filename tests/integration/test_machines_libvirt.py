"""libvirt machines through a real hub: a fault in each phase leaves nothing.

The whole chain on a booted VM (create -> wait -> Ansible -> CloudSSHSpawner -> a cell runs ->
stop) is ``tests/e2e/test_full_chain.py[vm]``. Here a spawn of a libvirt VM fails in each phase:

* create: the image is missing, so no domain is defined;
* wait: the domain runs, but sshd cannot answer within the 5 s ready_timeout (QEMU has barely
  started the kernel);
* configure: the VM boots and Ansible runs, but the notebook environment's Python does not exist;
  the image holds another environment (its own path and Python), so the configurer must not take
  the prepared-image fast path: it runs the notebook_env role, which fails;
* start: the VM is configured, but CloudSSHSpawner's command does not exist on it; the image holds
  exactly the template's environment, so only the personalisation ran (notebook_env skipped).

Each must leave zero domains labelled for the hub, zero files in the provider's storage
directory, zero per-server keys and tunnels, and tell the user which step failed and why. The
configure and start cases boot a VM under software emulation each (one to three minutes).
The provider's own cleanup on every failure is tested in test_libvirt_provider.py.
"""

import secrets

import pytest
import requests

from multiplespawner.machines import DEFAULT_NOTEBOOK_ENV
from tests.integration.test_machines_docker import MachineHub, machine_catalogue

pytestmark = pytest.mark.slow

#: CloudSSHSpawner's waits for an emulated guest (see test_full_chain.py)
EMULATED = {"connect_timeout": 60, "keepalive_interval": 10, "start_timeout": 600, "http_timeout": 300}

FAULTS = {
    # phase: (image (None: the VM image), ready_timeout, catalogue options, words the user's message must contain)
    "create": ("/nonexistent/vm-image", 600, {},
               ["The create step failed", "is incomplete or missing", "python -m images.vm build"]),
    "wait": (None, 5, {}, ["The wait step failed", "did not answer over SSH", "--- console ---"]),
    "configure": (None, 600, {"configurer_variables": {"notebook_env_path": "/opt/other-env",
                                                       "notebook_env_python": "/nonexistent/python3"}},
                  ["The configure step failed", "Create the notebook environment"]),
    "start": (None, 600, {"spawner_kwargs": {"cmd": ["/nonexistent/jupyterhub-singleuser"]}},
              ["The start step failed", "/nonexistent/jupyterhub-singleuser"]),
}


@pytest.mark.parametrize("phase", list(FAULTS))
def test_fault_on_the_vm_path_leaves_nothing(phase, hub_factory, libvirt_uri, vm_image, libvirt_storage, tmp_path):
    image, ready_timeout, options, words = FAULTS[phase]
    tmp_path.chmod(0o755)
    storage = libvirt_storage / f"hub-{secrets.token_hex(4)}"
    catalogue = machine_catalogue(image or str(vm_image), provider="libvirt", name="vm-machine",
                                  notebook_env=DEFAULT_NOTEBOOK_ENV,
                                  configurer_variables=options.get("configurer_variables"),
                                  spawner_kwargs={**EMULATED, **options.get("spawner_kwargs", {})})
    mh = MachineHub(hub_factory, None, tmp_path, catalogue, f"""
c.MachineOrchestrator.provider_options = {{"libvirt": {{"uri": {libvirt_uri!r}, "storage_dir": {str(storage)!r}}}}}
c.MachineOrchestrator.ready_timeout = {ready_timeout}
""", libvirt=(libvirt_uri, storage))
    message = mh.failure()
    for word in words:
        assert word in message, message
    left = mh.counter().wait_for_nothing_left()
    assert left == {}, f"left behind: {left}"
    log = mh.hub.log_text()
    if phase != "create":  # the domain existed: its directory was made, then removed
        assert "Machine jh-" in log and "destroyed libvirt machine" in log
    # the prepared-image decision, both ways, on a real machine of the image
    if phase == "configure":
        assert "is not this run's" in log and "configuring it in full" in log
        assert "the image is prepared" not in log
    if phase == "start":
        assert "the image is prepared with this notebook environment" in log
        assert "TASK [Check that jupyterhub-singleuser runs]" not in log
    assert requests.get(f"{mh.hub.api_url}/", timeout=10).status_code == 200
