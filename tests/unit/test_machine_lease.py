"""MachineLease without services: the template's authenticator, the checks at prepare time, a
full pool's answer."""

import pytest
from jupyterhub.spawner import SpawnException
from traitlets import TraitError

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


OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorsPoolHostKey"
BARE_POOL = {"name": "local_machine", "provider": "local"}  # the thesis's bare_metal deployment


def test_a_pool_without_hosts_takes_the_operators_pool_hosts():
    hosts = {"local_machine": [{"address": "127.0.0.2", "port": 2222, "host_key": OTHER_KEY, "capacity": 2}]}
    spec = template("bare_metal")
    configured = lease(spec, BARE_POOL, pool_hosts=hosts)
    configured.check(CloudSSHSpawner)
    assert configured.hosts == hosts["local_machine"]
    # a deployment that lists hosts uses its own
    listed = {**BARE_POOL, "hosts": [{"address": "h", "host_key": HOST_KEY}]}
    assert lease(spec, listed, pool_hosts=hosts).hosts == listed["hosts"]
    # neither: refused, saying what to set
    with pytest.raises(SpawnException) as e:
        lease(spec, BARE_POOL, pool_hosts={"other": hosts["local_machine"]}).check(CloudSSHSpawner)
    assert "Deployment 'local_machine' lists no hosts" in e.value.message
    assert 'c.MachineOrchestrator.pool_hosts = {"local_machine": [' in e.value.message


@pytest.mark.parametrize("pool_hosts, problem", [
    ({"local_machine": []}, "local_machine: [] should be non-empty"),
    ({"local_machine": [{"address": "h"}]}, "local_machine/0: 'host_key' is a required property"),
    ({"local_machine": [{"address": "h", "host_key": "AAAA"}]}, "local_machine/0/host_key: 'AAAA' does not match"),
    ({"local_machine": [{"address": "h", "host_key": HOST_KEY, "port": 0}]}, "local_machine/0/port: 0 is less than"),
    ({"local_machine": [{"address": "h", "host_key": HOST_KEY, "port": "22"}]}, "local_machine/0/port: '22' is not of type 'integer'"),
    ({"local_machine": [{"address": "h", "host_key": HOST_KEY, "capacity": 0}]}, "local_machine/0/capacity: 0 is less than"),
    ({"local_machine": [{"address": "h", "host_key": HOST_KEY, "password": "x"}]}, "('password' was unexpected)"),
    ({"local_machine": {"address": "h", "host_key": HOST_KEY}}, "local_machine: {'address'"),
    ({"no spaces": [{"address": "h", "host_key": HOST_KEY}]}, "'no spaces' is not a deployment name"),
])
def test_pool_hosts_are_checked_like_a_deployments_hosts(pool_hosts, problem):
    with pytest.raises(TraitError) as e:
        MachineOrchestrator(pool_hosts=pool_hosts)
    assert str(e.value).startswith("c.MachineOrchestrator.pool_hosts: ")
    assert problem in str(e.value)


def test_a_virtual_machine_from_an_unknown_provider_is_refused_naming_what_is_missing():
    oci = {"name": "oracle_linux_7_8", "provider": "oci", "image": "Oracle Linux 7.8"}
    with pytest.raises(SpawnException) as e:
        lease(template(authenticator={"class": "certificate"}), oci).check(CloudSSHSpawner)
    assert (e.value.status_code, e.value.reason) == (400, "template_error")
    message = e.value.message
    assert "deployment 'oracle_linux_7_8' asks for a machine from provider 'oci'" in message
    assert "this hub has no machine provider 'oci'" in message
    assert "Machine providers this hub has: docker, libcloud, libvirt" in message
    assert "c.MachineOrchestrator.provider_options" in message
    assert "entry point group multiplespawner.providers" in message
    # a known provider passes this check (and the next one asks for the CA)
    with pytest.raises(SpawnException, match="set c.CredentialStore.ca_key_file"):
        lease(template(authenticator={"class": "certificate"})).check(CloudSSHSpawner)
