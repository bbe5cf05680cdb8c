"""The original MultipleSpawner's configuration files (the thesis's Listings 11 and 12), verbatim,
in a real hub: what they describe is spawned where the resources exist, and refused with a
message naming what is missing where they do not.

The catalogue directory holds the two listing files as printed (``tests/unit/thesis/``) and,
because the listings have no template for their bare-metal deployment ``local_machine``, one
more file in the original format (:data:`LOCAL_MACHINE_TEMPLATE`). The listing's deployment
names no hosts: the operator's pool host (a real sshd on its own 127.0.0.N that trusts the
hub's SSH CA) comes from ``c.MachineOrchestrator.pool_hosts``. The listing's Oracle Cloud
virtual machine (provider ``oci``) has no provider in this suite and is refused.
"""

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.fixtures.machines import MachineCounter, hub_ca
from tests.fixtures.procs import wait_until
from tests.integration.test_cloudssh_spawner import user_processes
from tests.integration.test_multiple_bare_metal import SINGLEUSER, hub_config, lab_answers

LISTINGS = Path(__file__).parent.parent / "unit" / "thesis"

#: A template for the listings' bare_metal deployment, written as the thesis writes templates
#: (its spawner and authenticator class paths, a name with a space). No configurer: the pool
#: host is prepared beforehand (its users exist, the notebook environment is installed).
LOCAL_MACHINE_TEMPLATE = [{
    "name": "Local Machine Spawner",
    "resource_type": "bare_metal",
    "providers": ["local"],
    "spawner": {
        "class": "cloudsshspawner.cloudsshspawner.CloudSSHSpawner",
        "kwargs": {"remote_python": "/usr/bin/python3", "cmd": [SINGLEUSER],
                   "keepalive_interval": 2, "term_timeout": 5},
    },
    "authenticator": {
        "class": "corc.authenticator.SSHAuthenticator",
        "kwargs": {"create_certificate": "True", "key_name": "{JUPYTERHUB_USER}_id_rsa",
                   "load_existing": "True"},
    },
}]


@pytest.fixture
def thesis_hub(sshd_factory, unix_user, hub_factory, tmp_path):
    """A hub whose catalogue is the listings plus :data:`LOCAL_MACHINE_TEMPLATE`, the pool host
    of ``local_machine`` from ``pool_hosts`` (capacity 1), and two Unix users allowed on it.

    Returns (hub, host, users).
    """
    tmp_path.chmod(0o755)
    ca_file, ca = hub_ca(tmp_path)
    ca_public = tmp_path / "hub-ca.pub"
    ca_public.write_bytes(ca.export_public_key())
    host = sshd_factory(extra_config=f"TrustedUserCAKeys {ca_public}")
    catalogue = tmp_path / "catalogue"
    catalogue.mkdir()
    for listing in sorted(LISTINGS.glob("thesis-listing*.json")):
        shutil.copy(listing, catalogue / listing.name)
    (catalogue / "local-machine-template.json").write_text(json.dumps(LOCAL_MACHINE_TEMPLATE, indent=4))
    pool_hosts = {"local_machine": [
        {"address": host.host, "port": host.port, "host_key": host.host_key, "capacity": 1}]}
    hub = hub_factory(hub_config(catalogue) + f"""
c.CredentialStore.ca_key_file = {str(ca_file)!r}
c.MachineOrchestrator.pool_hosts = {pool_hosts!r}
""")
    users = [unix_user("th") for _ in range(2)]
    for user in users:
        hub.create_user(user)
    return hub, host, users


def test_the_listings_bare_metal_deployment_spawns_on_the_operators_pool_host(thesis_hub):
    """The listing's ``local_machine`` pool: spawned through the REST API on the host from
    pool_hosts with a per-server certificate, reached through the proxy, stopped with nothing
    left (no notebook, SSH connection, tunnel or credential), the host free for the next user."""
    hub, host, (alice, bob) = thesis_hub
    counter = MachineCounter.of_hub(None, "-", hub)
    options = {"template": "Local-Machine-Spawner"}

    model = hub.spawn(alice, user_options=options, timeout=180)
    state = model["state"]
    assert state["machine"]["kind"] == "pool" and state["machine"]["deployment"] == "local_machine"
    assert state["machine"]["machine"]["id"] == f"{host.host}:{host.port}"
    assert state["child_state"]["host_key"] == host.host_key
    assert state["machine"]["notebook_user"] == alice
    assert len(counter.credential_dirs()) == 1  # the server's own key and certificate
    assert lab_answers(hub, alice)  # /user/alice/api/status through the proxy and the tunnel
    assert len(host.connections()) == 1
    # alice has no authorized key on the host: only the certificate the hub CA signed let her in
    assert f"Accepted publickey for {alice} " in host.log_path.read_text()
    assert "ED25519-CERT" in host.log_path.read_text()
    # the listing was read in the original format, each translation named in the log
    log = hub.log_text()
    assert "local-machine-template.json: at /0/authenticator/class: original MultipleSpawner format" in log
    assert "thesis-listing12-templates.json: at /0/configurer/class: original MultipleSpawner format" in log

    hub.stop_server(alice)
    wait_until(lambda: user_processes(alice) == [], timeout=30, message="alice's notebook gone")
    assert counter.wait_for_nothing_left() == {}
    assert host.connections() == []

    # the pool's one place is free again: the next user gets the same host
    model = hub.spawn(bob, user_options=options, timeout=180)
    assert model["state"]["machine"]["machine"]["id"] == f"{host.host}:{host.port}"
    assert lab_answers(hub, bob)
    hub.stop_server(bob)
    wait_until(lambda: user_processes(bob) == [], timeout=30, message="bob's notebook gone")
    assert counter.wait_for_nothing_left() == {}


def test_the_listings_oci_virtual_machine_is_refused_naming_what_is_missing(thesis_hub):
    """The listing's Oracle Linux VM on ``oci``: a 400 whose message names the provider, the
    providers the hub has and what to configure; no server, credential, tunnel or process."""
    hub, _host, (alice, _) = thesis_hub
    counter = MachineCounter.of_hub(None, "-", hub)
    r = hub.api("POST", f"/users/{alice}/server", json={"template": "VirtualMachine-Spawner"})
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert message.startswith(
        "Template 'VirtualMachine-Spawner' cannot be used here: its deployment 'oracle_linux_7_8' "
        "asks for a machine from provider 'oci', but this hub has no machine provider 'oci'."), message
    assert "Machine providers this hub has: docker, libcloud, libvirt." in message
    assert "c.MachineOrchestrator.provider_options" in message
    assert "entry point group multiplespawner.providers" in message
    assert hub.server_model(alice) is None
    assert counter.leftovers() == {} and user_processes(alice) == []
    assert not re.search(r"\] 5\d\d (GET|POST) ", hub.log_text())
