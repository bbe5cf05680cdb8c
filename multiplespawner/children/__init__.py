"""One small adapter per kind of child spawner: how the chosen resources reach it.

:mod:`.base` holds the interface and the registry; a new kind of child is one new module here
(``@register`` a :class:`~.base.ChildAdapter` subclass) and one line below.
"""

from . import batch, cloudssh, docker, kube, local, swarm  # noqa: F401  (each registers its adapter)
from .base import ChildAdapter, CpuWeight, adapter_for, resource_kwargs

__all__ = ["ChildAdapter", "CpuWeight", "adapter_for", "resource_kwargs"]
