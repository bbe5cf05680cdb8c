"""A child's start failing because a service it needs failed names that service."""

from types import SimpleNamespace

import pytest
import requests
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
