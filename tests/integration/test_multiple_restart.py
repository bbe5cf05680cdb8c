"""Hub restart with a local-process server and a container server running through MultipleSpawner:
both are found again (same process, same container) and still answer through the new proxy;
the container's session then runs out and it is stopped and its container removed, while the
local server, which has no session limit, keeps running.
"""

import json
import secrets
import sys
import time

from tests.fixtures.procs import wait_until
from tests.integration.test_multiple_hub import processes_of, server_env

LIFETIME_MINUTES = 1.5  # long enough to spawn and restart on a busy machine, short for a test


def write_catalogue(folder, image, suffix):
    folder.chmod(0o755)
    path = folder / "catalogue.json"
    path.write_text(json.dumps({
        "deployments": {"local": [{"name": "hub-host", "provider": "local"}],
                        "container": [{"name": "here", "provider": "docker", "image": image}]},
        "templates": [
            {"name": "local-mock", "resource_type": "local", "providers": ["local"],
             "environment": {"WHO": "{JUPYTERHUB_USER}/{JUPYTERHUB_SERVER_NAME}"},
             "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner",
                         "kwargs": {"cmd": [sys.executable, "-m", "jupyterhub.tests.mocksu"]}}},
            {"name": "box", "resource_type": "container", "providers": ["docker"],
             "requires": ["docker", "image"],
             "resources": {"cpu": {"default": 1, "min": 0.5, "max": 2},
                           "memory_mb": {"default": 512, "min": 256, "max": 1024}},
             "lifetime_minutes": {"default": LIFETIME_MINUTES, "max": LIFETIME_MINUTES},
             "spawner": {"class": "dockerspawner.DockerSpawner",
                         "kwargs": {"image": "{DEPLOYMENT_IMAGE}", "remove": True,
                                    "name_template": f"ms-restart-{{username}}-{{servername}}-{suffix}"}}},
        ],
    }))
    return path


def test_restart_keeps_local_and_container_servers_then_container_expires(
    hub_factory, unix_user, docker_engine, notebook_image, tmp_path
):
    catalogue = write_catalogue(tmp_path, notebook_image, secrets.token_hex(3))
    gateway = docker_engine.networks.get("bridge").attrs["IPAM"]["Config"][0]["Gateway"]
    hub = hub_factory(f"""
c.JupyterHub.spawner_class = "multiple"
c.JupyterHub.allow_named_servers = True
c.JupyterHub.hub_ip = {gateway!r}
c.JupyterHub.hub_connect_ip = {gateway!r}
c.MultipleSpawner.catalogue_paths = [{str(catalogue)!r}]
c.MultipleSpawner.lifetime_grace = 0
c.Spawner.poll_interval = 5
""")
    name = unix_user()
    hub.create_user(name)
    hub.spawn(name, user_options={"template": "local-mock"})
    hub.spawn(name, "box", user_options={"template": "box"}, timeout=180)
    local_pids = processes_of(name)
    box_state = hub.server_model(name, "box")["state"]
    container_id = box_state["child_state"]["object_id"]
    deadline = box_state["multiple"]["deadline"]
    assert hub.server_model(name)["state"]["multiple"]["deadline"] is None

    hub.restart()
    assert time.time() < deadline, "the restart took longer than the session; raise LIFETIME_MINUTES"

    # the same local process and the same container, both answering through the new proxy
    assert hub.server_model(name)["ready"] and hub.server_model(name, "box")["ready"]
    assert server_env(hub, name)["WHO"] == f"{name}/"
    assert processes_of(name) == local_pids
    r = hub.server_request(name, "api/status", server_name="box")
    assert r.status_code == 200, r.text
    assert hub.server_model(name, "box")["state"]["child_state"]["object_id"] == container_id
    assert docker_engine.containers.get(container_id).status == "running"

    # the container's session runs out after the restart: server stopped, container removed
    wait_until(lambda: hub.server_model(name, "box") is None,
               timeout=deadline - time.time() + 60, message="expired container server stopped")
    assert time.time() >= deadline
    wait_until(lambda: not docker_engine.containers.list(all=True, filters={"id": container_id}),
               timeout=60, message="expired container removed")
    assert "ran out" in hub.log_text()

    # the local server has no session limit and is untouched
    assert hub.server_model(name)["ready"]
    assert server_env(hub, name)["WHO"] == f"{name}/"
    assert processes_of(name) == local_pids
