"""Fault cells for the Docker engine under container templates (docs/reliability.md).

A private ``dockerd`` (:mod:`tests.fixtures.private_dockerd`, ``--live-restore``; the shared
engine other tests use is never touched) runs the containers of one hub whose MultipleSpawner
has a container template (DockerSpawner, the hub reaching each container at its address on the
private bridge; ``c.DockerSpawner.client_kwargs`` bounds each engine call). The containers run
JupyterHub's mock single-user server from the host's venv, mounted read-only into an image that
is only a root's skeleton (``import_host_runtime_image``): the engine's faults are the point,
and copying a notebook image into the private daemon would cost about 80 s of set-up.
One server (``running``) is started before any fault and
kept throughout; the daemon is restarted, frozen (SIGSTOP) and stopped by the PID the fixture
started.
"""

import json
import sys
import time

import pytest
import requests

from tests.fixtures.faults import hung, refusing, restart
from tests.fixtures.hub import Hub
from tests.fixtures.private_dockerd import PrivateDockerd, host_runtime_volumes
from tests.fixtures.procs import wait_until
from tests.integration.test_faults import hub_latency_during, kept_server

#: the per-call bound on the Docker engine's API in these cells (seconds)
ENGINE_TIMEOUT = 15
NAMED = "Docker engine"


@pytest.fixture(scope="module")
def dockerd():
    daemon = PrivateDockerd()
    try:
        daemon.start()
        daemon.image = daemon.import_host_runtime_image()
        yield daemon
    finally:
        daemon.cleanup()
    assert daemon.leftover_processes() == []


@pytest.fixture(scope="module")
def docker_hub(dockerd, tmp_path_factory):
    folder = tmp_path_factory.mktemp("docker-faults")
    folder.chmod(0o755)
    catalogue = folder / "catalogue.json"
    catalogue.write_text(json.dumps({
        "deployments": {"container": [{"name": "here", "provider": "docker", "image": dockerd.image}]},
        "templates": [{
            "name": "box", "resource_type": "container", "providers": ["docker"],
            "spawner": {"class": "dockerspawner.DockerSpawner",
                        "kwargs": {"image": "{DEPLOYMENT_IMAGE}", "remove": True, "pull_policy": "never",
                                   "use_internal_ip": True,
                                   # the engine's faults are the point, not the notebook: the
                                   # mock single-user server from the host's venv
                                   "cmd": [sys.executable, "-m", "jupyterhub.tests.mocksu"],
                                   "volumes": host_runtime_volumes(),
                                   # removed by DockerSpawner on stop, but not AutoRemove: a
                                   # restarting dockerd deletes AutoRemove containers even with
                                   # live-restore
                                   "extra_host_config": {"auto_remove": False},
                                   "name_template": "ms-fault-{username}-{servername}"}},
        }],
    }))
    hub = Hub(f"""
c.JupyterHub.spawner_class = "multiple"
c.JupyterHub.hub_ip = {dockerd.gateway!r}
c.JupyterHub.hub_connect_ip = {dockerd.gateway!r}
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
c.MultipleSpawner.catalogue_paths = [{str(catalogue)!r}]
c.DockerSpawner.client_kwargs = {{"timeout": {ENGINE_TIMEOUT}}}
""", env={"DOCKER_HOST": dockerd.base_url}).start()
    with kept_server(hub, lambda: spawn(hub, "running")):
        yield hub


def spawn(hub, user, timeout=180):
    hub.create_user(user)
    return hub.spawn(user, user_options={"user_options": {"template": "box"}}, timeout=timeout)


def failed_spawn(hub, user) -> tuple[str, float]:
    """Ask for a server that must fail; return the last progress message and the seconds until
    the hub gave up on it."""
    hub.create_user(user)
    logged = len(hub.log_text())
    started = time.monotonic()
    r = hub.api("POST", f"/users/{user}/server", json={"user_options": {"template": "box"}})
    assert r.status_code == 202, r.text
    try:
        last = hub.progress(user)[-1]
    except requests.HTTPError as e:  # the spawn ended before the stream opened: "not starting"
        assert e.response.status_code == 400, e
        last = None
    wait_until(lambda: hub.server_model(user) is None, timeout=60, message="failed server gone")
    took = time.monotonic() - started
    if last is None:  # the message the hub recorded for this spawn's failure
        # JupyterHub's own line for a start that failed ("Not starting NAME's server ...: why",
        # or "Error starting"/"Unhandled error starting" for other errors); not the lines of the
        # clean-up after it, which fails too while the engine is down
        failures = [line for line in hub.log_text()[logged:].splitlines()
                    if f"{user}'s server" in line and ("Not starting" in line or "rror starting" in line)]
        assert failures, hub.log_tail()
        return failures[0], took
    assert last["failed"], last
    return last["message"], took


def running_answers(hub) -> bool:
    return hub.server_request("running", "api/status", timeout=10).status_code == 200


def container_ids(dockerd) -> set:
    return {c.id for c in dockerd.client.containers.list(all=True)}


def test_dockerd_restart_running_container_survives_next_spawn_works(docker_hub, dockerd):
    before = container_ids(dockerd)
    took = restart(dockerd)
    assert container_ids(dockerd) == before
    assert all(c.status == "running" for c in dockerd.client.containers.list(all=True))
    assert running_answers(docker_hub)
    started = time.monotonic()
    spawn(docker_hub, "after-restart")
    print(f"dockerd restart: back after {took:.2f} s, the container survived (live-restore), "
          f"the next spawn was ready {time.monotonic() - started:.2f} s later")
    docker_hub.stop_server("after-restart")
    assert container_ids(dockerd) == before


def test_dockerd_hung_spawn_fails_bounded_naming_the_engine(docker_hub, dockerd):
    before = container_ids(dockerd)
    with hung(dockerd):
        (message, waited), slowest = hub_latency_during(docker_hub, lambda: failed_spawn(docker_hub, "during-hang"))
        assert running_answers(docker_hub)  # the hub reaches the container, not the engine
    print(f"dockerd hung: spawn failed after {waited:.2f} s ({message!r}); slowest hub API answer {slowest:.2f} s")
    assert NAMED in message, message
    # until the server is gone: the failing start's engine call, then the stop's inspect and
    # remove (each bounded by ENGINE_TIMEOUT), plus the loaded machine's margin
    assert waited < 4 * ENGINE_TIMEOUT, waited
    assert slowest < 2.0, slowest
    spawn(docker_hub, "during-hang")
    docker_hub.stop_server("during-hang")
    wait_until(lambda: container_ids(dockerd) == before, timeout=30, message="no container left")


def test_dockerd_refusing_spawn_fails_at_once_naming_the_engine(docker_hub, dockerd):
    before = container_ids(dockerd)
    with refusing(dockerd):
        (message, waited), slowest = hub_latency_during(docker_hub, lambda: failed_spawn(docker_hub, "during-stop"))
        assert running_answers(docker_hub)
    print(f"dockerd stopped: spawn failed after {waited:.2f} s ({message!r}); slowest hub API answer {slowest:.2f} s")
    assert NAMED in message, message
    assert waited < 5, waited
    spawn(docker_hub, "during-stop")
    docker_hub.stop_server("during-stop")
    wait_until(lambda: container_ids(dockerd) == before, timeout=30, message="no container left")
    docker_hub.stop_server("running")
    wait_until(lambda: not container_ids(dockerd), timeout=30, message="every container removed")
