"""The operator's settings for machine-backed templates (``c.MachineOrchestrator.*``)."""

from __future__ import annotations

import hashlib
import json
import os
import socket

from traitlets import Dict, Float, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from ..catalogue import is_identifier, pool_hosts_problems
from ..providers.registry import make_provider
from .credentials import CredentialStore

#: provider instances of this process, by name and options (see :meth:`MachineOrchestrator.provider`)
_PROVIDERS: dict[tuple, object] = {}


class MachineOrchestrator(LoggingConfigurable):
    """Operator settings for machine-backed templates (``c.MachineOrchestrator.*``)."""

    hub_id = Unicode(
        help="""Identifies this hub on the machines it creates (label/tag
        org.jupyterhub-multiplespawner.hub). Machines with this id that no server owns are
        destroyed when the hub starts, so give every hub sharing a provider its own id and keep
        it stable across restarts. Default: the host name and a hash of the hub's working
        directory.""",
    ).tag(config=True)

    @default("hub_id")
    def _default_hub_id(self):
        digest = hashlib.sha256(os.getcwd().encode()).hexdigest()[:10]
        return f"{socket.gethostname()[:40]}-{digest}"

    provider_options = Dict(
        help="""Constructor options per provider name, e.g. {"libcloud": {"driver": "ec2",
        "key": ..., "secret": ...}, "docker": {"publish_address": "127.0.0.1"}}. Operator
        secrets belong here (read them from the environment), never in the catalogue.""",
    ).tag(config=True)

    admin_user = Unicode(
        "jhadmin",
        help="""Account a provider creates on each machine for the configurer (key login with the
        per-server key, passwordless sudo). The notebook runs as another account.""",
    ).tag(config=True)

    pool_admin_key_file = Unicode(
        "",
        help="""Private key file (OpenSSH format, no passphrase, readable by the hub only) the
        configurer logs in with as `admin_user` on the hosts of bare_metal pools whose template
        has a configurer. That account must exist on every such host with this key authorised
        and passwordless sudo. Empty: bare_metal templates with a configurer are refused.""",
    ).tag(config=True)

    pool_hosts = Dict(
        key_trait=Unicode(),
        help="""Hosts of bare_metal pools, by deployment name, for deployments that list no
        `hosts` themselves, e.g. {"local_machine": [{"address": "node1.example.org", "port": 22,
        "host_key": "ssh-ed25519 AAAA...", "capacity": 4}]}. Each host is written as in a
        deployment's `hosts` (address and host_key; optional port, username, capacity) and checked
        against the same schema. A deployment that lists hosts itself uses those and not these.
        This keeps addresses and host keys in the operator's configuration, and gives hosts to
        catalogues that name a pool without them (the original MultipleSpawner's
        {"name": "local_machine", "provider": "local"}).""",
    ).tag(config=True)

    @validate("pool_hosts")
    def _validate_pool_hosts(self, proposal):
        problems = []
        for name, hosts in proposal.value.items():
            if not is_identifier(name):
                problems.append(f"{name!r} is not a deployment name")
            problems += [f"{name}{problem}" for problem in pool_hosts_problems(hosts)]
        if problems:
            raise TraitError("c.MachineOrchestrator.pool_hosts: " + "; ".join(problems))
        return proposal.value

    drain_file = Unicode(
        "",
        help="""JSON file of drained bare_metal pool hosts, written by the fleet service
        (``multiplespawner-servers drain HOST``; give the service the same path as
        ``--FleetApp.drain_file``). A drained host (by ``address:port`` or by address) takes no
        new servers; its running ones go on. Read at every pool claim, so it takes effect at
        once and survives hub restarts. Keep it outside the catalogue directories. Empty: no
        host is ever drained.""",
    ).tag(config=True)

    ready_timeout = Float(
        300,
        help="Seconds a created machine may take until sshd answers with the pinned host key.",
    ).tag(config=True)

    setup_timeout = Float(
        1800,
        help="""Seconds added to the child spawner's start_timeout for creating, waiting for and
        configuring a machine (the hub's start timeout covers the whole spawn).""",
    ).tag(config=True)

    @default("log")
    def _log_default(self):
        return self.parent.log if self.parent is not None else super()._log_default()

    def provider(self, name: str):
        """The (process-wide, cached) provider instance for ``name``."""
        options = self.provider_options.get(name, {})
        key = (name, json.dumps(options, sort_keys=True, default=str))
        if key not in _PROVIDERS:
            _PROVIDERS[key] = make_provider(name, **options)
        return _PROVIDERS[key]

    def credential_store(self) -> CredentialStore:
        return CredentialStore(parent=self)
