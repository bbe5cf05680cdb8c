"""MachineLease without services: the template's authenticator, the checks at prepare time, a
full pool's answer."""

import pytest
from jupyterhub.spawner import SpawnException

from cloudsshspawner import CloudSSHSpawner
from multiplespawner.catalogue import CatalogueError, validate_document
from multiplespawner.machines import MachineLease, MachineOrchestrator, PoolFullError

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfThePoolHost"


def template(resource_type="virtual_machine", **extra):
    return {"name": "t", "resource_type": resource_type, "providers": ["docker"],
            "spawner": {"class": "cloudsshspawner.CloudSSHSpawner"}, **extra}


def lease(spec, deployment=None, **orchestrator):
    deployment = deployment or {"name": "d", "provider": "docker"}
    return MachineLease(None, MachineOrchestrator(**orchestrator), spec, deployment, {})


@pytest.mark.parametrize("authenticator, problem", [
    ({"class": "kerberos"}, "/0/authenticator/class: 'kerberos' is not one of ['key', 'certificate']"),
    ({"class": "key", "kwargs": {"validity_seconds": 600}}, "/0/authenticator/kwargs"),
    ({"class": "certificate", "kwargs": {"validity_seconds": 10}}, "10 is less than the minimum of 60"),
    ({"class": "certificate", "kwargs": {"principals": ["root"]}}, "'principals' was unexpected"),
])
def test_the_catalogue_refuses_an_unknown_authenticator(authenticator, problem):
    with pytest.raises(CatalogueError) as e:
        validate_document([template(authenticator=authenticator)], "cat.yaml")
    assert problem in str(e.value)


def test_authenticator_defaults_to_the_per_server_key():
    assert lease(template()).authenticator == "key"
    cert = lease(template(authenticator={"class": "certificate", "kwargs": {"validity_seconds": 600}}))
    assert (cert.authenticator, cert.authenticator_kwargs) == ("certificate", {"validity_seconds": 600})


def test_a_certificate_template_needs_the_hub_ca(tmp_path):
    spec = template(authenticator={"class": "certificate"})
    with pytest.raises(SpawnException, match="set c.CredentialStore.ca_key_file"):
        lease(spec).check(CloudSSHSpawner)
    orchestrator = MachineOrchestrator()
    orchestrator.config.CredentialStore.ca_key_file = str(tmp_path / "ca")
    MachineLease(None, orchestrator, spec, {"name": "d", "provider": "docker"}, {}).check(CloudSSHSpawner)


def test_configuring_a_pool_needs_the_admin_key():
    pool = {"name": "p", "provider": "pool", "hosts": [{"address": "h", "host_key": HOST_KEY}]}
    spec = template("bare_metal", configurer={"class": "ansible"})
    with pytest.raises(SpawnException, match="set c.MachineOrchestrator.pool_admin_key_file"):
        lease(spec, pool).check(CloudSSHSpawner)
    lease(spec, pool, pool_admin_key_file="/srv/admin-key").check(CloudSSHSpawner)


def test_a_full_pool_is_a_capacity_spawn_exception():
    error = PoolFullError("All 2 hosts of 'p' are in use")
    assert isinstance(error, SpawnException)
    assert (error.status_code, error.reason, error.message) == (
        503, "capacity", "All 2 hosts of 'p' are in use")
