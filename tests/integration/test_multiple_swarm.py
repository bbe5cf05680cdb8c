"""The container resource type on Docker Swarm, the engine DAG runs its notebooks on:
``dockerspawner.SwarmSpawner`` as MultipleSpawner's child on a real one-node swarm (a private
``dockerd``, see tests/fixtures/swarm.py), started through the REST API and reached through the
proxy. The chosen CPU, memory and GPU become the service's limits and reservations (the GPU a
generic resource the node advertises, handed to the task), the deployment's constraints its
placement; the server survives a hub restart, and stopping it leaves no service and no
container."""

import json

from multiplespawner.catalogue import DEFAULT_SPAWNER_CLASSES
from tests.fixtures.docker_engine import containers
from tests.fixtures.procs import wait_until
from tests.fixtures.swarm import GPU_RESOURCE
from tests.integration.child_spawners import HUB_ENV

MiB = 1024 * 1024
CONSTRAINTS = ["node.role==manager", "node.platform.os==linux"]


def test_swarm_template_limits_placement_restart_and_stop(hub_factory, swarm, tmp_path):
    tmp_path.chmod(0o755)
    cat = tmp_path / "catalogue.json"
    cat.write_text(json.dumps({
        "deployments": {"container": [
            {"name": "dag", "provider": "swarm", "image": swarm.notebook_image, "constraints": CONSTRAINTS},
        ]},
        "templates": [{
            "name": "swarm", "resource_type": "container", "providers": ["swarm"],
            "requires": ["docker", "image"],
            "resources": {"cpu": {"default": 1, "min": 0.5, "max": 2},
                          "memory_mb": {"default": 1024, "min": 256, "max": 2048},
                          "gpus": {"default": 0, "max": 1}},
            # the hub is outside the swarm: the service publishes its port (the task joins the
            # ingress network and docker_gwbridge) instead of relying on the swarm's DNS
            "spawner": {"class": "tests.fixtures.swarm.GatewaySwarmSpawner",
                        "kwargs": {"image": "{DEPLOYMENT_IMAGE}", "name_template": "ms-swarm-{username}",
                                   "use_internal_ip": False}},
        }],
    }))
    hub = hub_factory(f"""
c.JupyterHub.spawner_class = "multiple"
c.JupyterHub.hub_ip = {swarm.gateway!r}
c.JupyterHub.hub_connect_ip = {swarm.gateway!r}
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}  # always 202, however fast the spawn
c.MultipleSpawner.catalogue_paths = [{str(cat)!r}]
c.MultipleSpawner.allowed_spawner_classes = {[*DEFAULT_SPAWNER_CLASSES, "tests.fixtures.swarm.GatewaySwarmSpawner"]!r}
""", env={**HUB_ENV, "DOCKER_HOST": swarm.base_url})
    hub.create_user("ann")
    r = hub.api("POST", "/users/ann/server",
                json={"user_options": {"template": "swarm", "cpu": 1, "memory_mb": 512, "gpus": 1}})
    assert r.status_code == 202, r.text
    hub.wait_for_ready("ann", timeout=240)
    state = hub.user("ann")["servers"][""]["state"]
    service_id = state["child_state"]["object_id"]

    # the service as the swarm holds it: limits, reservations, the GPU, the placement
    task_spec = swarm.client.api.inspect_service(service_id)["Spec"]["TaskTemplate"]
    resources = task_spec["Resources"]
    assert resources["Limits"] == {"NanoCPUs": 10**9, "MemoryBytes": 512 * MiB}, resources
    assert resources["Reservations"] == {
        "NanoCPUs": 10**9, "MemoryBytes": 512 * MiB,
        "GenericResources": [{"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 1}}],
    }, resources
    assert task_spec["Placement"]["Constraints"] == CONSTRAINTS
    # the task got the node's GPU, and its container runs with the limits
    (task,) = swarm.client.api.tasks(filters={"service": service_id, "desired-state": "running"})
    assert task.get("GenericResources") == [
        {"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": GPU_RESOURCE.split("=", 1)[1]}}], task
    container = swarm.client.containers.get(task["Status"]["ContainerStatus"]["ContainerID"])
    assert f"DOCKER_RESOURCE_{GPU_RESOURCE}" in container.attrs["Config"]["Env"]
    assert container.attrs["HostConfig"]["NanoCpus"] == 10**9
    assert container.attrs["HostConfig"]["Memory"] == 512 * MiB

    r = hub.server_request("ann", "api/status")
    assert r.status_code == 200, r.text

    # a hub restart keeps the service and finds it again
    hub.restart()
    assert hub.server_model("ann")["ready"]
    r = hub.server_request("ann", "api/status")
    assert r.status_code == 200, r.text
    assert swarm.client.services.get(service_id).id == service_id

    hub.stop_server("ann")
    wait_until(lambda: not swarm.client.services.list(filters={"id": service_id}), timeout=60,
               message="service removed")
    wait_until(lambda: not containers(swarm.client), timeout=120, message="task containers removed")
    assert "Failed to cleanup" not in hub.log_text()
