"""LocalProcessSpawner children: the notebook as a process on the hub's machine.

CPU and memory become ``CPU_LIMIT``/``MEM_LIMIT`` in the notebook's environment (JupyterHub does
not enforce them for local processes); GPUs are not mapped.
"""

from __future__ import annotations

from .base import ChildAdapter, register


@register
class LocalProcessAdapter(ChildAdapter):
    adapts = "jupyterhub.spawner:LocalProcessSpawner"
