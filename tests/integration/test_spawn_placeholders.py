"""Placeholders at spawn time, for real: DockerSpawner through MultipleSpawner on the local engine.

A template may put ``{JUPYTERHUB_USER}`` in dict keys (DockerSpawner's ``volumes`` maps host
paths to mounts) and in fields DockerSpawner formats again with its own ``{username}``
namespace (``volumes``, ``notebook_dir``). A user whose name has braces gets exactly their name
there: substituted once, never read as format syntax (it was a 500 "expected '}'" and, for
keys, a KeyError).
"""

import json

from tests.fixtures.docker_engine import containers
from tests.fixtures.procs import wait_until

USER = "bad{name"


def test_user_name_with_braces_in_keys_and_reformatted_fields(hub_factory, docker_engine, notebook_image, tmp_path):
    tmp_path.chmod(0o755)
    volumes_root = tmp_path / "volumes"
    volumes_root.mkdir(mode=0o755)
    cat = tmp_path / "catalogue.json"
    box = {
        "name": "box", "resource_type": "container", "providers": ["docker"],
        "spawner": {"class": "dockerspawner.DockerSpawner", "kwargs": {
            "image": "{DEPLOYMENT_IMAGE}", "remove": True, "pull_policy": "never",
            "name_template": "ms-ph-{username}-{servername}",
            "volumes": {f"{volumes_root}/{{JUPYTERHUB_USER}}": "/srv/{JUPYTERHUB_USER}"},
            "notebook_dir": "/srv/{JUPYTERHUB_USER}",
        }},
    }
    cat.write_text(json.dumps({
        "deployments": {"container": [{"name": "here", "provider": "docker", "image": notebook_image}]},
        "templates": [box],
    }))
    gateway = docker_engine.networks.get("bridge").attrs["IPAM"]["Config"][0]["Gateway"]
    hub = hub_factory(f"""
c.JupyterHub.spawner_class = "multiple"
c.JupyterHub.hub_ip = {gateway!r}
c.JupyterHub.hub_connect_ip = {gateway!r}
c.MultipleSpawner.catalogue_paths = [{str(cat)!r}]
""")
    hub.create_user(USER)
    r = hub.api("POST", f"/users/{USER}/server", json={"user_options": {"template": "box"}})
    assert r.status_code in (201, 202), r.text
    model = hub.wait_for_ready(USER, timeout=180)

    container_id = model["state"]["child_state"]["object_id"]
    attrs = docker_engine.containers.get(container_id).attrs
    mounts = {m["Source"]: m["Destination"] for m in attrs["Mounts"]}
    assert mounts == {f"{volumes_root}/{USER}": f"/srv/{USER}"}
    assert f"JUPYTERHUB_ROOT_DIR=/srv/{USER}" in attrs["Config"]["Env"]
    # what the hub recorded to rebuild the child is the resolved, escaped kwargs DockerSpawner formats
    kwargs = model["state"]["multiple"]["child_kwargs"]
    assert kwargs["volumes"] == {f"{volumes_root}/bad{{{{name": "/srv/bad{{name"}
    assert hub.server_request(USER, "api/status").status_code == 200

    hub.stop_server(USER)
    wait_until(lambda: not containers(docker_engine, id=container_id), timeout=60, message="container removed")
    assert "expected '}'" not in hub.log_text() and "KeyError" not in hub.log_text()


def test_user_name_with_braces_in_a_batch_script_is_refused(hub_factory, tmp_path):
    """batchspawner renders its script as Jinja or with ``str.format`` depending on the text:
    no escaping fits both, so the spawn is refused (400, before anything starts)."""
    tmp_path.chmod(0o755)
    cat = tmp_path / "catalogue.json"
    job = {
        "name": "job", "resource_type": "batch", "providers": ["slurm"],
        "spawner": {"class": "batchspawner.SlurmSpawner", "kwargs": {
            "batch_script": "#!/bin/sh\n#SBATCH --job-name=nb-{JUPYTERHUB_USER}\n{cmd}\n"}},
    }
    cat.write_text(json.dumps({"deployments": {"batch": [{"name": "cluster", "provider": "slurm"}]},
                               "templates": [job]}))
    hub = hub_factory(f"""
import batchspawner  # noqa: F401
c.JupyterHub.spawner_class = "multiple"
c.MultipleSpawner.catalogue_paths = [{str(cat)!r}]
""")
    hub.create_user(USER)
    r = hub.api("POST", f"/users/{USER}/server", json={"user_options": {"template": "job"}})
    assert r.status_code == 400, r.text
    assert r.json()["message"] == ("Template 'job' cannot be used by this server: its batch_script "
                                   "would carry a brace from the user or server name.")
    assert hub.server_model(USER) is None
    assert "Calling Spawner.start" not in hub.log_text()
