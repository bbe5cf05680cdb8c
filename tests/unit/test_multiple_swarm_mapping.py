"""What a choice on a Docker Swarm template becomes for ``dockerspawner.SwarmSpawner``: limits,
reservations, GPUs as generic resources, placement constraints from the deployment, and the
template errors for kwargs or deployments that cannot work. Pure functions, no swarm (the
service on a real swarm: tests/integration/test_multiple_swarm.py)."""

from types import SimpleNamespace

import pytest
from dockerspawner import DockerSpawner, SwarmSpawner

from multiplespawner.children import adapter_for, resource_kwargs
from multiplespawner.children.docker import DockerAdapter
from multiplespawner.children.swarm import GPU_KIND, SwarmAdapter, swarm_kwargs
from multiplespawner.classes import TemplateError

MiB = 1024 * 1024
HERE = {"name": "here", "provider": "swarm", "image": "notebook:1"}


class SiteSwarmSpawner(SwarmSpawner):
    """A site's own subclass, as DAG-like deployments have."""


@pytest.mark.parametrize(
    "template_kwargs, deployment, limits, gpus, expected",
    [
        # reservations equal the chosen limits when the template sets none
        ({}, HERE, {"cpu_limit": 2.0, "mem_limit": "1024M"}, None,
         {"cpu_guarantee": 2.0, "mem_guarantee": 1024 * MiB}),
        # a template's guarantee below the choice is kept, above it is lowered to it
        ({"cpu_guarantee": 0.5, "mem_guarantee": "4G"}, HERE, {"cpu_limit": 2.0, "mem_limit": "1024M"}, None,
         {"cpu_guarantee": 0.5, "mem_guarantee": 1024 * MiB}),
        # nothing chosen: nothing reserved
        ({}, HERE, {}, None, {}),
        # GPUs: a reservation of the default generic resource kind
        ({}, HERE, {}, 2, {"extra_resources_spec": {"generic_resources": {GPU_KIND: 2}}}),
        # ... or of the one kind the template names; its other Resources kwargs stay
        ({"extra_resources_spec": {"generic_resources": {"gpu": 0}, "cpu_limit": 1}}, HERE, {}, 1,
         {"extra_resources_spec": {"generic_resources": {"gpu": 1}, "cpu_limit": 1}}),
        # zero GPUs chosen: no generic resource at all
        ({}, HERE, {}, 0, {}),
        # the deployment's constraints join the template's placement
        ({"extra_placement_spec": {"constraints": ["node.role==worker"], "preferences": [("spread", "node.id")]}},
         {**HERE, "constraints": ["node.labels.site==dag"]}, {}, None,
         {"extra_placement_spec": {"constraints": ["node.role==worker", "node.labels.site==dag"],
                                   "preferences": [("spread", "node.id")]}}),
        ({}, {**HERE, "constraints": ["node.hostname==a"]}, {}, None,
         {"extra_placement_spec": {"constraints": ["node.hostname==a"]}}),
    ],
)
def test_swarm_kwargs(template_kwargs, deployment, limits, gpus, expected):
    assert swarm_kwargs(template_kwargs, deployment, limits, gpus) == expected


@pytest.mark.parametrize(
    "template_kwargs, deployment, gpus, message",
    [
        ({}, {**HERE, "constraints": "node.labels.site==dag"}, None, "constraints must be a list"),
        ({}, {**HERE, "constraints": ["ok", ""]}, None, "constraints must be a list"),
        ({}, {**HERE, "constraints": [3]}, None, "constraints must be a list"),
        ({"extra_resources_spec": {"generic_resources": {"a": 0, "b": 0}}}, HERE, 1, "naming one kind"),
        ({"extra_resources_spec": {"generic_resources": ["gpu=1"]}}, HERE, 1, "naming one kind"),
    ],
)
def test_unusable_templates_and_deployments_are_template_errors(template_kwargs, deployment, gpus, message):
    with pytest.raises(TemplateError, match=message):
        swarm_kwargs(template_kwargs, deployment, {}, gpus)


def test_swarm_classes_get_the_swarm_adapter_before_their_docker_base():
    assert type(adapter_for(SwarmSpawner)) is SwarmAdapter
    assert type(adapter_for(SiteSwarmSpawner)) is SwarmAdapter
    assert type(adapter_for(DockerSpawner)) is DockerAdapter


@pytest.mark.parametrize("cls", [SwarmSpawner, SiteSwarmSpawner])
def test_resource_mapping_gives_a_swarm_child_limits_reservations_gpus_and_placement(cls):
    choice = SimpleNamespace(
        resources={"cpu": 1.5, "memory_mb": 512, "gpus": 1},
        template=SimpleNamespace(spawner_kwargs={"image": "{DEPLOYMENT_IMAGE}"}),
        deployment={**HERE, "constraints": ["node.labels.gpu==yes"]},
    )
    kwargs = resource_kwargs(cls, choice)
    assert kwargs == {
        "cpu_limit": 1.5, "mem_limit": "512M", "cpu_guarantee": 1.5, "mem_guarantee": 512 * MiB,
        "extra_resources_spec": {"generic_resources": {GPU_KIND: 1}},
        "extra_placement_spec": {"constraints": ["node.labels.gpu==yes"]},
    }
    assert "extra_host_config" not in kwargs  # DockerSpawner's device request: not for services
    # the traits take the values as the child is built
    child = cls(**kwargs)
    assert (child.cpu_limit, child.mem_limit, child.cpu_guarantee, child.mem_guarantee) == (
        1.5, 512 * MiB, 1.5, 512 * MiB)
