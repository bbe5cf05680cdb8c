"""Machine-backed servers: a bare-metal pool host or a provider's machine, then CloudSSHSpawner.

One module per job: :mod:`.lifecycle` (one server's machine from claim or creation to release),
:mod:`.pool` (which pool host a server may use), :mod:`.reaper` (orphan machines),
:mod:`.settings` (the operator's ``c.MachineOrchestrator`` traits), :mod:`.credentials`
(per-server SSH keys and pinned host keys). Providers (``multiplespawner.providers``) and
configurers (``multiplespawner.configurers``) stand beside this package.
"""

from .lifecycle import (
    DEFAULT_NOTEBOOK_ENV,
    MACHINE_RESOURCE_TYPES,
    MachineLease,
    lease_for,
    lease_from_record,
    lease_record,
)
from .pool import POOL, PoolFullError
from .reaper import reap_once
from .settings import MachineOrchestrator

__all__ = ["DEFAULT_NOTEBOOK_ENV", "MACHINE_RESOURCE_TYPES", "MachineLease", "MachineOrchestrator", "POOL", "PoolFullError",
           "lease_for", "lease_from_record", "lease_record", "reap_once"]
