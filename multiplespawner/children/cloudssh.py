"""CloudSSHSpawner children: the notebook on a machine (bare-metal pool host or a provider's
machine) reached over SSH. The machine's connection traits come from ``multiplespawner.machines``
when the machine is ready; the resources here are only exported like any spawner's."""

from __future__ import annotations

from .base import ChildAdapter, register


@register
class CloudSSHAdapter(ChildAdapter):
    adapts = "cloudsshspawner.spawner:CloudSSHSpawner"
    runs_on_machines = True
    reformatted_kwargs = ChildAdapter.reformatted_kwargs + (
        "remote_username", "ssh_key_path", "ssh_certificate_path", "remote_hosts", "cmd", "remote_log_path",
    )
