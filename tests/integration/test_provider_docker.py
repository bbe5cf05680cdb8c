"""DockerProvider against the real Docker engine and the locally built ssh-machine image.

Every test counts the containers labelled with its own hub id afterwards: zero means nothing
leaked, whatever step failed.
"""

import asyncio
import uuid

import asyncssh
import pytest

from multiplespawner.providers import MachineSpec, ProviderError, Resources
from multiplespawner.providers.base import LABEL_PREFIX
from multiplespawner.providers.docker import DockerProvider
from tests.fixtures.docker_engine import labelled_containers, remove_labelled_containers
from tests.fixtures.procs import wait_until


def _keypair():
    key = asyncssh.generate_private_key("ssh-ed25519")
    return key, key.export_private_key().decode(), key.export_public_key().decode().strip()


@pytest.fixture
def hub_id(docker_engine):
    """A hub id unique to the test; containers still labelled with it afterwards fail the test."""
    hub = f"test-{uuid.uuid4().hex[:10]}"
    yield hub
    leaked = remove_labelled_containers(docker_engine, {f"{LABEL_PREFIX}.hub": hub})
    assert leaked == 0, f"{leaked} container(s) of hub {hub} were left behind"


@pytest.fixture
def provider(ssh_machine_image):
    return DockerProvider(default_image=ssh_machine_image)


def make_spec(hub_id, *, image=None, cpu=0.5, memory_mb=256, ssh_user="hubadmin"):
    client_key, _, client_public = _keypair()
    host_key, host_private, host_public = _keypair()
    spec = MachineSpec(
        name=f"jh-{hub_id}-alice",
        deployment={"name": "container-machine", "provider": "docker", **({"image": image} if image else {})},
        resources=Resources(cpu=cpu, memory_mb=memory_mb),
        ssh_user=ssh_user,
        authorized_key=client_public,
        host_key_private=host_private,
        labels={f"{LABEL_PREFIX}.hub": hub_id, f"{LABEL_PREFIX}.user": "alice", f"{LABEL_PREFIX}.server": "lab"},
    )
    return spec, client_key, host_public


def count(docker_engine, hub_id):
    return len(labelled_containers(docker_engine, {f"{LABEL_PREFIX}.hub": hub_id}))


async def ssh_run(machine, client_key, command, known_hosts_key=None):
    known = asyncssh.import_known_hosts(
        f"[{machine.host}]:{machine.port} {known_hosts_key or machine.host_public_key}\n"
    )
    async with asyncssh.connect(
        machine.host, machine.port, username=machine.ssh_user, client_keys=[client_key],
        known_hosts=known, agent_path=None,
    ) as conn:
        return (await conn.run(command, check=True)).stdout


async def test_lifecycle_login_limits_list_destroy(provider, docker_engine, hub_id):
    spec, client_key, host_public = make_spec(hub_id, cpu=0.5, memory_mb=256)
    machine = await provider.create(spec)
    assert machine.host == "127.0.0.1" and machine.port > 0
    assert machine.host_public_key == host_public
    assert machine.labels == spec.labels

    # published on loopback only, with the limits asked for, private host key not in the env
    attrs = docker_engine.api.inspect_container(machine.id)
    bindings = attrs["NetworkSettings"]["Ports"]["22/tcp"]
    assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]
    assert attrs["HostConfig"]["NanoCpus"] == 500_000_000
    assert attrs["HostConfig"]["Memory"] == 256 * 1024 * 1024
    assert not any("PRIVATE KEY" in e for e in attrs["Config"]["Env"] or [])

    await provider.wait_ready(machine, timeout=60)
    whoami = await ssh_run(machine, client_key, "id -un")
    assert whoami.strip() == "hubadmin"

    # the limits as the kernel applies them (cgroup v1 or v2)
    cgroup = await ssh_run(
        machine, client_key,
        "if [ -f /sys/fs/cgroup/cpu.max ]; then cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/memory.max; "
        "else echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us); "
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; fi",
    )
    cpu_line, memory_line = cgroup.split("\n")[:2]
    quota, period = (int(x) for x in cpu_line.split())
    assert quota / period == pytest.approx(0.5)
    assert int(memory_line) == 256 * 1024 * 1024

    # another key is refused: only the per-server key opens the machine
    stranger, _, _ = _keypair()
    with pytest.raises(asyncssh.PermissionDenied):
        await ssh_run(machine, stranger, "true")

    # found again by hub id alone, as after a hub restart
    (found,) = await DockerProvider().list(hub_id)
    assert found == machine

    await provider.destroy(machine.id)
    assert count(docker_engine, hub_id) == 0
    await provider.destroy(machine.id)  # idempotent
    assert await provider.list(hub_id) == []


async def test_wrong_pinned_host_key_is_refused(provider, docker_engine, hub_id):
    spec, client_key, _ = make_spec(hub_id)
    machine = await provider.create(spec)
    try:
        _, _, other_public = _keypair()
        await provider.wait_ready(machine, timeout=60)
        impostor = type(machine)(**{**machine.to_state(), "host_public_key": other_public})
        with pytest.raises(ProviderError, match="other than the one pinned"):
            await provider.wait_ready(impostor, timeout=20)
        with pytest.raises(asyncssh.HostKeyNotVerifiable):
            await ssh_run(machine, client_key, "true", known_hosts_key=other_public)
    finally:
        await provider.destroy(machine.id)
    assert count(docker_engine, hub_id) == 0


async def test_missing_image_leaves_nothing(provider, docker_engine, hub_id):
    spec, _, _ = make_spec(hub_id, image="jupyterhub-multiplespawner/no-such-image:none")
    with pytest.raises(ProviderError, match="not on the Docker engine"):
        await provider.create(spec)
    assert count(docker_engine, hub_id) == 0


async def test_failure_after_container_exists_removes_it(provider, docker_engine, hub_id):
    # the base image has no /etc/machine: the container is created, copying the keys fails
    spec, _, _ = make_spec(hub_id, image="jupyterhub-multiplespawner/base:current")
    with pytest.raises(ProviderError, match="could not start"):
        await provider.create(spec)
    assert count(docker_engine, hub_id) == 0


async def test_container_that_stops_fails_wait_early(provider, docker_engine, hub_id):
    spec, _, _ = make_spec(hub_id)
    machine = await provider.create(spec)
    try:
        docker_engine.containers.get(machine.id).kill()
        started = asyncio.get_running_loop().time()
        with pytest.raises(ProviderError, match="exited"):
            await provider.wait_ready(machine, timeout=120)
        assert asyncio.get_running_loop().time() - started < 30
    finally:
        await provider.destroy(machine.id)
    assert count(docker_engine, hub_id) == 0


async def test_cancelled_create_removes_the_container(provider, docker_engine, hub_id):
    # cancel once the container exists, while the create thread is still starting it; on an
    # idle machine create can win that race: then clean up and try again
    for _ in range(5):
        spec, _, _ = make_spec(hub_id)
        task = asyncio.ensure_future(provider.create(spec))
        await asyncio.to_thread(
            wait_until, lambda: count(docker_engine, hub_id) == 1 or task.done(), 60, 0.01)
        if not task.done():
            break
        await provider.destroy(task.result().id)
    else:
        pytest.fail("create always finished before it could be cancelled")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the create thread finishes on its own; then its container is removed
    await asyncio.to_thread(wait_until, lambda: count(docker_engine, hub_id) == 0, 60)


async def test_bad_input_is_refused_before_anything_is_made(provider, docker_engine, hub_id):
    spec, _, _ = make_spec(hub_id)
    with pytest.raises(ProviderError, match="host key"):
        await provider.create(MachineSpec(**{**spec.__dict__, "host_key_private": "not a key"}))
    with pytest.raises(ProviderError, match="hub id"):
        await provider.create(MachineSpec(**{**spec.__dict__, "labels": {f"{LABEL_PREFIX}.user": "alice"}}))
    with pytest.raises(ValueError, match="loopback"):
        DockerProvider(publish_address="0.0.0.0")
    assert count(docker_engine, hub_id) == 0


async def test_docker_calls_stay_off_the_event_loop(provider, docker_engine, hub_id):
    import requests

    from tests.fixtures.loop_thread import blocking_calls

    spec, _, _ = make_spec(hub_id)
    with blocking_calls([(requests.Session, "send")]) as blocking:  # every Docker API request
        machine = await provider.create(spec)
        await provider.list(hub_id)
        await provider.destroy(machine.id)
    assert len(blocking.calls) >= 3
    assert blocking.on_loop == [], f"{len(blocking.on_loop)} Docker API requests on the event loop"
    assert count(docker_engine, hub_id) == 0
