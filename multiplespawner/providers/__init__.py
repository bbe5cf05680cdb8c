"""Machine providers: create, reach, list and destroy machines for notebook servers.

Providers know nothing of JupyterHub; the spawner uses them through :class:`Provider`.
"""

from .base import Machine, MachineSpec, Provider, ProviderError, Resources

__all__ = ["Machine", "MachineSpec", "Provider", "ProviderError", "Resources"]
