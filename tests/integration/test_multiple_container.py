"""The container resource type for real: DockerSpawner on the local engine via MultipleSpawner,
with the chosen CPU and memory applied to the container, progress events from MultipleSpawner
and DockerSpawner, the container removed on stop, and a template whose image does not exist
failing with a message that names the step (and leaving no container behind)."""

import json

from tests.fixtures.docker_engine import containers
from tests.fixtures.procs import wait_until

NO_SUCH_IMAGE = "jupyterhub-multiplespawner/no-such-image:never"


def test_container_template_applies_limits_and_stop_removes(
    hub_factory, docker_engine, notebook_image, tmp_path
):
    tmp_path.chmod(0o755)
    cat = tmp_path / "catalogue.json"
    box = {
        "name": "box", "resource_type": "container", "providers": ["docker"],
        "requires": ["docker", "image"],
        "resources": {"cpu": {"default": 1, "min": 0.5, "max": 2},
                      "memory_mb": {"default": 1024, "min": 256, "max": 2048}},
        "spawner": {"class": "dockerspawner.DockerSpawner",
                    "kwargs": {"image": "{DEPLOYMENT_IMAGE}", "remove": True,
                               "name_template": "ms-test-{username}-{servername}"}},
    }
    # no "requires: image" (that would refuse it up front); pull_policy never: no registry asked
    broken = {**box, "name": "broken", "providers": ["nowhere"], "requires": ["docker"],
              "spawner": {"class": "dockerspawner.DockerSpawner",
                          "kwargs": {**box["spawner"]["kwargs"], "pull_policy": "never"}}}
    cat.write_text(json.dumps({
        "deployments": {"container": [{"name": "here", "provider": "docker", "image": notebook_image},
                                      {"name": "nowhere", "provider": "nowhere", "image": NO_SUCH_IMAGE}]},
        "templates": [box, broken],
    }))
    gateway = docker_engine.networks.get("bridge").attrs["IPAM"]["Config"][0]["Gateway"]
    hub = hub_factory(f"""
c.JupyterHub.spawner_class = "multiple"
c.JupyterHub.allow_named_servers = True
c.JupyterHub.hub_ip = {gateway!r}
c.JupyterHub.hub_connect_ip = {gateway!r}
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
c.MultipleSpawner.catalogue_paths = [{str(cat)!r}]


async def pre_spawn_hook(spawner):
    # the broken server fails in milliseconds: give the test time to open its progress stream
    # (once the failure is handled the hub answers 400 "not starting" and the message is gone)
    if spawner.name == "broken":
        import asyncio
        await asyncio.sleep(2)


c.Spawner.pre_spawn_hook = pre_spawn_hook
""")
    hub.create_user("ann")
    r = hub.api("POST", "/users/ann/server", json={"user_options": {"template": "box", "cpu": 1, "memory_mb": 512}})
    assert r.status_code == 202, r.text
    messages = [e["message"] for e in hub.progress("ann")]
    hub.wait_for_ready("ann", timeout=180)
    state = hub.user("ann")["servers"][""]["state"]
    # MultipleSpawner's phases, then DockerSpawner's own progress event, then ready
    assert messages[1:4] == [
        f"Template box (catalogue version {state['multiple']['catalogue_version']}) on docker",
        "Starting DockerSpawner",
        "Spawning server...",
    ], messages
    assert messages[-1].startswith("Server ready at"), messages

    container_id = state["child_state"]["object_id"]
    attrs = docker_engine.containers.get(container_id).attrs
    assert attrs["HostConfig"]["Memory"] == 512 * 1024 * 1024
    assert attrs["HostConfig"]["NanoCpus"] or attrs["HostConfig"]["CpuQuota"]
    cpus = attrs["HostConfig"]["NanoCpus"] / 1e9 if attrs["HostConfig"]["NanoCpus"] else (
        attrs["HostConfig"]["CpuQuota"] / attrs["HostConfig"]["CpuPeriod"])
    assert cpus == 1
    r = hub.server_request("ann", "api/status")
    assert r.status_code == 200, r.text

    hub.stop_server("ann")
    wait_until(lambda: not containers(docker_engine, id=container_id),
               timeout=60, message="container removed")

    # an image that is not there: the progress stream ends with the step and DockerSpawner's reason
    r = hub.api("POST", "/users/ann/servers/broken", json={"user_options": {"template": "broken"}})
    assert r.status_code == 202, r.text
    last = hub.progress("ann", "broken")[-1]
    assert last["failed"], last
    assert last["message"].startswith("Spawn failed: The start step failed: DockerSpawner: "), last
    assert f"No such image: {NO_SUCH_IMAGE}" in last["message"], last
    wait_until(lambda: not hub.server_model("ann", "broken"), timeout=30, message="failed server gone")
    assert containers(docker_engine, name="ms-test-ann-broken") == []
    assert "Failed to cleanup" not in hub.log_text()
