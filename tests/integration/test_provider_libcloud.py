"""LibcloudProvider with libcloud's EC2 driver against a local EC2 API (moto server).

What the server holds is checked with an independent client (boto3): instance type, placement,
tags, user data and state. No instance boots here, so nothing connects over SSH to the
addresses moto hands out (see docs/providers.md for what this does and does not exercise).
"""

import base64
import uuid

import asyncssh
import pytest
import yaml
from libcloud.compute.drivers.ec2 import EC2NodeDriver

from multiplespawner.providers import MachineSpec, ProviderError, Resources
from multiplespawner.providers.base import LABEL_PREFIX
from multiplespawner.providers.identity import HUB_LABEL, internal_label
from multiplespawner.providers.libcloud import LibcloudProvider, choose_size, size_architecture
from tests.fixtures.moto import ACCESS_KEY, SECRET_KEY


@pytest.fixture
def ec2(moto_ec2):
    return moto_ec2.boto3_client()


def instances(ec2, hub_id, states=("pending", "running", "stopping", "stopped", "shutting-down")):
    """Instances tagged for ``hub_id`` in the given states (default: every state but terminated)."""
    reservations = ec2.describe_instances(
        Filters=[{"Name": f"tag:{HUB_LABEL}", "Values": [hub_id]},
                 {"Name": "instance-state-name", "Values": list(states)}]
    )["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


@pytest.fixture
def hub_id(ec2):
    """A hub id unique to the test; instances still alive with it afterwards fail the test."""
    hub = f"test-{uuid.uuid4().hex[:10]}"
    yield hub
    leaked = [i["InstanceId"] for i in instances(ec2, hub)]
    if leaked:
        ec2.terminate_instances(InstanceIds=leaked)
    assert not leaked, f"instances of hub {hub} were left running: {leaked}"


@pytest.fixture
def provider(moto_ec2):
    return LibcloudProvider(
        driver="ec2", key=ACCESS_KEY, secret=SECRET_KEY,
        driver_kwargs=moto_ec2.libcloud_driver_kwargs(), poll_interval=0.2,
    )


@pytest.fixture(scope="module")
def image_id(moto_ec2):
    return moto_ec2.boto3_client().describe_images()["Images"][0]["ImageId"]


def make_spec(hub_id, image_id, resources=Resources(2, 4096), **deployment):
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    spec = MachineSpec(
        name=f"jh-{hub_id}-alice",
        deployment={"name": "cloud-vm", "provider": "libcloud", "image": image_id, **deployment},
        resources=resources,
        ssh_user="hubadmin",
        authorized_key=client_key.export_public_key().decode().strip(),
        host_key_private=host_key.export_private_key().decode(),
        labels={HUB_LABEL: hub_id, f"{LABEL_PREFIX}.user": "alice", f"{LABEL_PREFIX}.server": "lab"},
    )
    return spec, " ".join(host_key.export_public_key().decode().split()[:2])


async def test_create_list_destroy(provider, ec2, hub_id, image_id):
    spec, host_public = make_spec(hub_id, image_id, Resources(2, 4096))
    machine = await provider.create(spec)
    (instance,) = instances(ec2, hub_id)
    assert instance["InstanceId"] == machine.id
    assert instance["State"]["Name"] == "running"
    # the size choose_size picks from the driver's catalogue for the image's architecture
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    sizes = {s.id: s for s in EC2NodeDriver(ACCESS_KEY, SECRET_KEY, region="us-east-1").list_sizes()}
    expected = choose_size(sizes.values(), Resources(2, 4096), architecture=image["Architecture"])
    assert instance["InstanceType"] == expected.id
    assert size_architecture(sizes[instance["InstanceType"]]) == image["Architecture"] == "x86_64"
    assert instance["ImageId"] == image_id
    assert machine.host == instance["PublicIpAddress"] and machine.port == 22
    assert machine.host_public_key == host_public and machine.ssh_user == "hubadmin"

    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert {k: tags[k] for k in spec.labels} == spec.labels
    assert tags[internal_label("name")] == spec.name
    assert tags[internal_label("host-key")] == host_public

    user_data = ec2.describe_instance_attribute(InstanceId=machine.id, Attribute="userData")["UserData"]["Value"]
    text = base64.b64decode(user_data).decode()
    assert text.startswith("#cloud-config\n")
    config = yaml.safe_load(text)
    assert config["ssh_keys"]["ed25519_public"] == host_public
    assert config["ssh_keys"]["ed25519_private"].strip() == spec.host_key_private.strip()
    assert config["users"][0]["name"] == "hubadmin"
    assert config["users"][0]["ssh_authorized_keys"] == [spec.authorized_key]

    (found,) = await provider.list(hub_id)
    assert found == machine
    assert await provider.list(f"other-{hub_id}") == []

    await provider.destroy(machine.id)
    assert instances(ec2, hub_id) == []
    assert [i["InstanceId"] for i in instances(ec2, hub_id, states=["terminated"])] == [machine.id]
    await provider.destroy(machine.id)  # idempotent
    await provider.destroy("i-0000000000000000")  # never existed
    assert await provider.list(hub_id) == []


async def test_deployment_location_sizes_and_private_address(provider, ec2, hub_id, image_id):
    spec, _ = make_spec(hub_id, image_id, Resources(1, 1024), location="us-east-1b",
                        sizes=["t3.large", "m5.large"], address="private", ssh_port=2222)
    machine = await provider.create(spec)
    try:
        (instance,) = instances(ec2, hub_id)
        assert instance["Placement"]["AvailabilityZone"] == "us-east-1b"
        assert instance["InstanceType"] == "t3.large"  # the cheaper of the two allowed 2 vCPU / 8 GiB sizes
        assert machine.host == instance["PrivateIpAddress"] and machine.port == 2222
        (found,) = await provider.list(hub_id)
        assert found.port == 2222
    finally:
        await provider.destroy(machine.id)


async def test_failure_after_run_instances_terminates_the_node(provider, ec2, hub_id, image_id, monkeypatch):
    def no_address(self, node, deployment):
        raise ProviderError(f"node {node.name} did not get an address (injected)")

    monkeypatch.setattr(LibcloudProvider, "_wait_for_address", no_address)
    spec, _ = make_spec(hub_id, image_id)
    with pytest.raises(ProviderError, match="injected"):
        await provider.create(spec)
    assert instances(ec2, hub_id) == []
    assert len(instances(ec2, hub_id, states=["terminated"])) == 1


async def test_lost_create_response_still_cleans_up(provider, ec2, hub_id, image_id, monkeypatch):
    real_create_node = EC2NodeDriver.create_node

    def create_then_fail(self, **kwargs):
        real_create_node(self, **kwargs)  # the cloud makes the node ...
        raise ConnectionError("connection reset (injected)")  # ... but the answer is lost

    monkeypatch.setattr(EC2NodeDriver, "create_node", create_then_fail)
    spec, _ = make_spec(hub_id, image_id)
    with pytest.raises(ProviderError, match="could not create node .*injected"):
        await provider.create(spec)
    assert instances(ec2, hub_id) == []
    assert len(instances(ec2, hub_id, states=["terminated"])) == 1


async def test_bad_deployments_create_nothing(provider, ec2, hub_id, image_id):
    spec, _ = make_spec(hub_id, "ami-00000000")
    with pytest.raises(ProviderError, match="no image 'ami-00000000'"):
        await provider.create(spec)
    spec, _ = make_spec(hub_id, image_id, location="mars-1a")
    with pytest.raises(ProviderError, match="no location 'mars-1a'"):
        await provider.create(spec)
    spec, _ = make_spec(hub_id, image_id, Resources(1024, 1024))
    with pytest.raises(ProviderError, match="no machine size for x86_64 images has 1024 CPUs"):
        await provider.create(spec)
    assert instances(ec2, hub_id, states=["pending", "running", "terminated"]) == []


async def test_destroy_refuses_nodes_it_did_not_make(provider, ec2, image_id):
    foreign = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="t3.micro")
    instance_id = foreign["Instances"][0]["InstanceId"]
    try:
        with pytest.raises(ProviderError, match="not made by this provider"):
            await provider.destroy(instance_id)
        state = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]
        assert state["Name"] in ("pending", "running")
    finally:
        ec2.terminate_instances(InstanceIds=[instance_id])


async def test_libcloud_calls_stay_off_the_event_loop(provider, ec2, hub_id, image_id):
    import requests

    from tests.fixtures.loop_thread import blocking_calls

    spec, _ = make_spec(hub_id, image_id)
    with blocking_calls([(requests.Session, "send")]) as blocking:  # every EC2 API request
        machine = await provider.create(spec)
        await provider.list(hub_id)
        await provider.destroy(machine.id)
    assert len(blocking.calls) >= 3
    assert blocking.on_loop == [], f"{len(blocking.on_loop)} EC2 API requests on the event loop"
    assert instances(ec2, hub_id) == []
