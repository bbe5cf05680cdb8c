"""Docker Swarm children: ``dockerspawner.SwarmSpawner`` (and subclasses), one service per server.

What a swarm template's choice becomes, on top of ``cpu_limit``/``mem_limit`` (every spawner's
traits; SwarmSpawner makes them the service's ``Resources.Limits``):

* **Reservations.** ``cpu_guarantee``/``mem_guarantee`` become ``Resources.Reservations``; the
  scheduler places the task only on a node with that much unreserved. A guarantee the
  template sets is lowered to the chosen limit (a reservation above the limit is refused by
  Docker); without one the reservation equals the chosen limit, as Kubernetes makes a request
  equal to its limit.
* **GPUs.** Swarm has no device requests for services; GPUs are a *generic resource* each node
  advertises (``node-generic-resources`` in its ``daemon.json``, e.g. ``"NVIDIA-GPU=GPU-1a2b..."``)
  and a service reserves by count. The chosen count becomes a reservation of kind
  :data:`GPU_KIND`, or of the one kind the template lists in ``extra_resources_spec``'s
  ``generic_resources`` (``{"gpu": 0}``: the value is replaced by the choice).
* **Placement.** A deployment's ``constraints`` (a list of swarm constraint expressions such as
  ``"node.labels.site==dag"``) are added to the template's ``extra_placement_spec``.

A template whose kwargs or deployment cannot work with this raises ``TemplateError``.
"""

from __future__ import annotations

from jupyterhub.traitlets import ByteSpecification

from ..classes import TemplateError
from .base import ChildAdapter, register
from .docker import DockerAdapter

#: The generic resource kind GPUs are reserved as unless the template names another: the name
#: Docker's documentation and NVIDIA's setup guides use for ``node-generic-resources``.
GPU_KIND = "NVIDIA-GPU"


def _reservation(template_value, limit, as_number):
    """The template's guarantee lowered to ``limit``; ``limit`` if the template sets none."""
    if template_value is None:
        return limit
    return min(as_number(template_value), limit)


def swarm_kwargs(template_kwargs: dict, deployment: dict, limits: dict, gpus) -> dict:
    """SwarmSpawner traits for a choice: reservations, GPUs, placement (see the module docs).

    ``limits`` holds the ``cpu_limit``/``mem_limit`` already mapped from the choice, ``gpus``
    the chosen GPU count (or None), ``deployment`` the chosen deployment entry.
    """
    kwargs: dict = {}
    as_bytes = ByteSpecification().validate
    if "cpu_limit" in limits:
        kwargs["cpu_guarantee"] = _reservation(template_kwargs.get("cpu_guarantee"), limits["cpu_limit"], float)
    if "mem_limit" in limits:
        kwargs["mem_guarantee"] = _reservation(
            template_kwargs.get("mem_guarantee"), as_bytes(None, limits["mem_limit"]), lambda v: as_bytes(None, v)
        )
    if gpus:
        spec = dict(template_kwargs.get("extra_resources_spec", {}))
        listed = spec.get("generic_resources") or {}
        if not isinstance(listed, dict) or len(listed) > 1:
            raise TemplateError(
                "extra_resources_spec.generic_resources must be a mapping naming one kind (the "
                f"GPUs' generic resource, e.g. {{{GPU_KIND!r}: 0}}) in a template that offers gpus"
            )
        spec["generic_resources"] = {next(iter(listed), GPU_KIND): int(gpus)}
        kwargs["extra_resources_spec"] = spec
    constraints = deployment.get("constraints", [])
    if not (isinstance(constraints, list) and all(isinstance(c, str) and c.strip() for c in constraints)):
        raise TemplateError(
            f"deployment {deployment.get('name')!r}: constraints must be a list of swarm "
            "constraint expressions such as \"node.labels.site==dag\""
        )
    if constraints:
        placement = dict(template_kwargs.get("extra_placement_spec", {}))
        placement["constraints"] = [*(placement.get("constraints") or []), *constraints]
        kwargs["extra_placement_spec"] = placement
    return kwargs


@register
class SwarmAdapter(DockerAdapter):
    adapts = "dockerspawner.swarmspawner:SwarmSpawner"

    def lower_cpu_weight(self, child, weight) -> None:
        """Nothing: a service's task runs on a swarm node, not beside the hub, and services
        have no host config (``cpu_shares``) to lower."""

    def resource_kwargs(self, choice) -> dict:
        """``cpu_limit``/``mem_limit`` (the service's limits), then :func:`swarm_kwargs`: no
        Docker device request (services have none), GPUs as a generic-resource reservation."""
        kwargs = ChildAdapter.resource_kwargs(self, choice)
        kwargs.update(swarm_kwargs(choice.template.spawner_kwargs, choice.deployment, kwargs,
                                   choice.resources.get("gpus")))
        return kwargs
