"""Child class resolution and the mapping of chosen resources onto the child's traits."""

import json

import pytest
from dockerspawner import DockerSpawner
from jupyterhub.spawner import LocalProcessSpawner

from multiplespawner.catalogue import load_catalogue
from multiplespawner.choices import resolve_choice
from multiplespawner.spawner import TemplateError, _resource_kwargs, spawner_class_for


def test_spawner_class_for():
    assert spawner_class_for("jupyterhub.spawner.LocalProcessSpawner") is LocalProcessSpawner
    assert spawner_class_for("docker") is DockerSpawner  # dockerspawner's entry point
    with pytest.raises(TemplateError, match="cannot import"):
        spawner_class_for("nowhere.Spawner")
    with pytest.raises(TemplateError, match="not a JupyterHub Spawner"):
        spawner_class_for("json.JSONDecoder")
    with pytest.raises(TemplateError, match="is a MultipleSpawner"):
        spawner_class_for("multiple")
    with pytest.raises(TemplateError, match="no spawner is registered"):
        spawner_class_for("no-such-entry-point")


def test_resource_kwargs(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({
        "deployments": {"container": [{"name": "d", "provider": "docker", "image": "nb"}]},
        "templates": [{"name": "gpu", "resource_type": "container", "providers": ["docker"],
                       "resources": {"cpu": {"default": 2}, "memory_mb": {"default": 512},
                                     "gpus": {"default": 1, "max": 2}},
                       "spawner": {"class": "docker", "kwargs": {"extra_host_config": {"shm_size": "1g"}}}}],
    }))
    choice = resolve_choice(load_catalogue([f]), {"gpus": 2}, user_name="a", groups=[], admin=False)
    kwargs = _resource_kwargs(DockerSpawner, choice)
    assert kwargs["cpu_limit"] == 2.0 and kwargs["mem_limit"] == "512M"
    assert kwargs["extra_host_config"]["shm_size"] == "1g"
    assert kwargs["extra_host_config"]["device_requests"][0]["Count"] == 2
    assert "extra_host_config" not in _resource_kwargs(LocalProcessSpawner, choice)
    assert DockerSpawner(**_resource_kwargs(DockerSpawner, choice)).mem_limit == 512 * 1024 * 1024
