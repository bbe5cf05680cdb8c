"""The container resource type for real: DockerSpawner on the local engine via MultipleSpawner,
with the chosen CPU and memory applied to the container, and the container removed on stop."""

import json

from tests.fixtures.procs import wait_until


def test_container_template_applies_limits_and_stop_removes(
    hub_factory, docker_engine, notebook_image, tmp_path
):
    tmp_path.chmod(0o755)
    cat = tmp_path / "catalogue.json"
    cat.write_text(json.dumps({
        "deployments": {"container": [{"name": "here", "provider": "docker", "image": notebook_image}]},
        "templates": [{
            "name": "box", "resource_type": "container", "providers": ["docker"],
            "requires": ["docker", "image"],
            "resources": {"cpu": {"default": 1, "min": 0.5, "max": 2},
                          "memory_mb": {"default": 1024, "min": 256, "max": 2048}},
            "spawner": {"class": "dockerspawner.DockerSpawner",
                        "kwargs": {"image": "{DEPLOYMENT_IMAGE}", "remove": True,
                                   "name_template": "ms-test-{username}-{servername}"}},
        }],
    }))
    gateway = docker_engine.networks.get("bridge").attrs["IPAM"]["Config"][0]["Gateway"]
    hub = hub_factory(f"""
c.JupyterHub.spawner_class = "multiple"
c.JupyterHub.hub_ip = {gateway!r}
c.JupyterHub.hub_connect_ip = {gateway!r}
c.MultipleSpawner.catalogue_paths = [{str(cat)!r}]
""")
    hub.create_user("ann")
    hub.spawn("ann", user_options={"template": "box", "cpu": 1, "memory_mb": 512}, timeout=180)
    state = hub.user("ann")["servers"][""]["state"]
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
    wait_until(lambda: not docker_engine.containers.list(all=True, filters={"id": container_id}),
               timeout=60, message="container removed")
