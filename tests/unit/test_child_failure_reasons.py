"""A child's start failing because a service it needs failed names that service."""

from types import SimpleNamespace

import pytest
import requests
from batchspawner import SlurmSpawner
from dockerspawner import DockerSpawner
from jupyterhub.spawner import LocalProcessSpawner

from multiplespawner.children import adapter_for


@pytest.mark.parametrize("error, expected", [
    (requests.ReadTimeout("UnixHTTPConnectionPool(host='localhost'): Read timed out. (read timeout=5)"),
     "the Docker engine did not answer within 5 s; please try again in a few minutes"),
    (requests.ConnectionError("('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))"),
     "the Docker engine is not reachable right now; please try again in a few minutes"),
    (RuntimeError("No such image: x"), None),  # not the engine's failure: shown as it is
])
def test_docker_engine_failures_are_named(error, expected):
    child = SimpleNamespace(client=SimpleNamespace(timeout=5))
    assert adapter_for(DockerSpawner).failure_reason(child, error) == expected


def test_other_children_show_their_error_as_it_is():
    assert adapter_for(LocalProcessSpawner).failure_reason(object(), requests.ReadTimeout("x")) is None


def test_batch_failures_name_the_batch_system():
    adapter = adapter_for(SlurmSpawner)
    child = SlurmSpawner.__new__(SlurmSpawner)  # no hub needed: only its class and start_timeout
    child._trait_values = {"start_timeout": 30}
    assert adapter.failure_reason(child, TimeoutError("SlurmSpawner did not start")) == (
        "SLURM did not start the job within 30 s (start_timeout): its controller may be down or "
        "the queue full; please try again later")
    error = RuntimeError("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation")
    assert adapter.failure_reason(child, error) == f"SLURM could not take the job: {error}"
    assert adapter.failure_reason(child, ValueError("not the batch system's")) is None


def test_the_hubs_log_line_names_the_service_beside_the_error():
    """The user's message and the hub's log line (JupyterHub logs the latter, which is all a
    client sees when the spawn ended before its progress stream opened) both name the engine."""
    from multiplespawner.spawner import MultipleSpawner

    error = requests.ConnectionError("('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))")
    child = DockerSpawner.__new__(DockerSpawner)
    child.__dict__["client"] = SimpleNamespace(timeout=5)
    spawner = SimpleNamespace(child=child, _record={"template": "box"}, _log_name="ada:")
    e = MultipleSpawner._start_error(spawner, error)
    assert "Docker engine is not reachable" in e.message
    assert "Docker engine is not reachable" in e.log_message and "FileNotFoundError" in e.log_message
