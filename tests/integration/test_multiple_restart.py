"""Hub restart with a local-process, a container and a bare-metal server running through
MultipleSpawner: all three are found again (same process, same container, same pool host, the
pool still full) and answer through the new proxy; then the container's and the bare-metal
server's sessions run out after the restart and both are stopped (container removed, pool host
returned, no notebook process or SSH connection left), while the local server, which has no
session limit, keeps running.
"""

import json
import secrets
import sys
import time

from tests.fixtures.docker_engine import containers
from tests.fixtures.procs import wait_until
from tests.fixtures.sshd import make_client_key
from tests.integration.test_cloudssh_spawner import user_processes
from tests.integration.test_multiple_bare_metal import lab_answers, pool_catalogue
from tests.integration.test_multiple_hub import processes_of, server_env

LIFETIME_MINUTES = 1.5  # long enough to spawn and restart on a busy machine, short for a test
LIFETIME = {"default": LIFETIME_MINUTES, "max": LIFETIME_MINUTES}


def write_catalogue(folder, image, suffix, pool):
    folder.chmod(0o755)
    path = folder / "catalogue.json"
    bare_metal = pool_catalogue(*pool)
    bare_metal["templates"][0]["lifetime_minutes"] = LIFETIME
    path.write_text(json.dumps({
        "deployments": {"local": [{"name": "hub-host", "provider": "local"}],
                        "container": [{"name": "here", "provider": "docker", "image": image}],
                        **bare_metal["deployments"]},
        "templates": [
            {"name": "local-mock", "resource_type": "local", "providers": ["local"],
             "environment": {"WHO": "{JUPYTERHUB_USER}/{JUPYTERHUB_SERVER_NAME}"},
             "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner",
                         "kwargs": {"cmd": [sys.executable, "-m", "jupyterhub.tests.mocksu"]}}},
            {"name": "box", "resource_type": "container", "providers": ["docker"],
             "requires": ["docker", "image"],
             "resources": {"cpu": {"default": 1, "min": 0.5, "max": 2},
                           "memory_mb": {"default": 512, "min": 256, "max": 1024}},
             "lifetime_minutes": LIFETIME,
             "spawner": {"class": "dockerspawner.DockerSpawner",
                         "kwargs": {"image": "{DEPLOYMENT_IMAGE}", "remove": True,
                                    "name_template": f"ms-restart-{{username}}-{{servername}}-{suffix}"}}},
            *bare_metal["templates"],
        ],
    }))
    return path


def test_restart_keeps_local_container_and_bare_metal_servers_then_sessions_expire(
    sshd_factory, hub_factory, unix_user, docker_engine, notebook_image, tmp_path
):
    tmp_path.chmod(0o755)
    host = sshd_factory()
    key_path, public = make_client_key(tmp_path)
    bm = unix_user("bm")
    host.authorize(bm, public)
    catalogue = write_catalogue(tmp_path, notebook_image, secrets.token_hex(3), ([(host, 1)], key_path))
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
    for user in (name, bm, "nobody-else"):
        hub.create_user(user)
    hub.spawn(name, user_options={"template": "local-mock"})
    # the two servers with a session limit start together, so their deadlines are close
    for user, server, template in ((name, "box", "box"), (bm, "", "pool-lab")):
        r = hub.api("POST", hub._server_path(user, server), json={"user_options": {"template": template}})
        assert r.status_code in (201, 202), r.text
    box_state = hub.wait_for_ready(name, "box", timeout=180)["state"]
    bm_state = hub.wait_for_ready(bm, timeout=180)["state"]
    local_pids, bm_notebook = processes_of(name), bm_state["child_state"]["pid"]
    assert bm_notebook in user_processes(bm)
    container_id = box_state["child_state"]["object_id"]
    deadlines = [box_state["multiple"]["deadline"], bm_state["multiple"]["deadline"]]
    assert hub.server_model(name)["state"]["multiple"]["deadline"] is None
    assert bm_state["machine"]["machine"]["id"] == f"{host.host}:{host.port}"

    hub.restart()
    assert time.time() < min(deadlines), "the restart took longer than the session; raise LIFETIME_MINUTES"

    # the same local process, container and pool host, all answering through the new proxy
    for user, server in ((name, ""), (name, "box"), (bm, "")):
        assert hub.server_model(user, server)["ready"], (user, server)
    assert server_env(hub, name)["WHO"] == f"{name}/"
    assert processes_of(name) == local_pids
    r = hub.server_request(name, "api/status", server_name="box")
    assert r.status_code == 200, r.text
    assert hub.server_model(name, "box")["state"]["child_state"]["object_id"] == container_id
    assert docker_engine.containers.get(container_id).status == "running"
    wait_until(lambda: lab_answers(hub, bm), timeout=60, message="bare-metal lab after restart")
    assert hub.server_model(bm)["state"]["child_state"]["pid"] == bm_notebook
    assert bm_notebook in user_processes(bm), "the bare-metal notebook did not survive the restart"
    # the pool allocation survived too: its only host is still taken
    r = hub.api("POST", "/users/nobody-else/server", json={"user_options": {"template": "pool-lab"}})
    assert r.status_code == 503 and "All 1 hosts of 'lab-pool' are in use" in r.json()["message"], r.text

    # both sessions run out after the restart: servers stopped, container removed, host returned
    wait_until(lambda: hub.server_model(name, "box") is None and hub.server_model(bm) is None,
               timeout=max(deadlines) - time.time() + 60, message="expired servers stopped")
    assert time.time() >= min(deadlines)
    wait_until(lambda: not containers(docker_engine, id=container_id),
               timeout=60, message="expired container removed")
    wait_until(lambda: user_processes(bm) == [] and host.connections() == [],
               timeout=60, message="bare-metal notebook and SSH connection gone")
    assert "ran out" in hub.log_text()

    # the local server has no session limit and is untouched
    assert hub.server_model(name)["ready"]
    assert server_env(hub, name)["WHO"] == f"{name}/"
    assert processes_of(name) == local_pids
