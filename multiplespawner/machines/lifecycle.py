"""Machine-backed servers: a host from a pool, or a machine a provider creates, then CloudSSHSpawner.

Templates of resource type ``bare_metal`` and ``virtual_machine`` run their notebook on a
machine the hub reaches over SSH. For one server, :class:`MachineLease` does, in order:

1. **create** - ``bare_metal``: claim a host of the deployment's pool that has capacity left
   (``hosts: [{address, port, username, host_key, capacity}]``, else the operator's
   ``c.MachineOrchestrator.pool_hosts`` for that deployment); ``virtual_machine``: make a
   per-server SSH credential (:mod:`.credentials`) and ``provider.create`` a machine from the
   deployment, the chosen resources and that credential, labelled with hub id, user and server;
2. **wait** - ``provider.wait_ready``: sshd answers with the pinned host key (pool hosts are not
   probed: CloudSSHSpawner verifies the pinned key when it connects);
3. **configure** - if the template has a ``configurer`` (e.g. AnsibleConfigurer): prepare the
   machine; each task result becomes a progress message on the spawn page. A created machine is
   new and always configured; a pool host is configured by the operator's admin account
   (``pool_admin_key_file``), and skipped when the configuration hash equals that of the host's
   last configuration (see below);
4. **start** - CloudSSHSpawner (the child) connects with the per-server key (pool hosts without
   a configurer or certificate: the key the template configures), pins the host key and starts
   ``jupyterhub-singleuser``.

The template's ``authenticator`` says how the hub logs in as the notebook user: ``key`` (the
default) authorises the per-server public key for that user; ``certificate`` gives the per-server
key an OpenSSH user certificate signed by the hub CA (``CredentialStore.ca_key_file``) for that
login name only, and the machine trusts the CA (``TrustedUserCAKeys``, set by the playbook or
prepared beforehand) instead of any authorized key.

Pool hosts and their configuration cache: :mod:`.pool`; orphan machines: :mod:`.reaper`;
operator settings: :mod:`.settings`; per-server keys: :mod:`.credentials`. With the ``key``
authenticator the per-server key is a playbook variable, so every spawn configures a pool
host; with ``certificate`` nothing per-spawn reaches the machine, and a second spawn of the
same user on the same host skips Ansible.

A failure (or cancellation) in any step releases what earlier steps made: the machine is
destroyed (or the pool host returned) and the credentials are removed; the user sees
``The <step> step failed: <why>``. ``stop`` and a server found dead by ``poll`` release the same
way. :meth:`MachineLease.to_state` (JSON, in the spawner state) holds the machine, the
credential files and the configuration hash: enough to reconnect or clean up after a restart.

Nothing here blocks the event loop: providers and the configurer run blocking work in bounded
thread pools or subprocesses; the database queries are the hub's own in-memory SQLAlchemy session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import asyncssh
from tornado.web import HTTPError
from traitlets.utils.importstring import import_item

from ..catalogue import resolve_placeholders
from ..children import adapter_for
from ..errors import SpawnError, SpawnException, failed
from ..metrics import PhaseClock
from ..providers.base import LABEL_PREFIX, Machine, MachineSpec, ProviderError, Resources
from ..providers.identity import HUB_LABEL
from ..providers.registry import available, provider_class
from .credentials import ServerCredentials
from .pool import (
    POOL,
    PoolFullError,
    claim_host,
    drop_claim,
    host_lock,
    last_config_hash,
    owner,
    pool_host_id,
    publish_occupancy,
    remember_config_hash,
)
from .reaper import reap_once
from .settings import MachineOrchestrator

#: resource types whose servers run on a machine reached over SSH
MACHINE_RESOURCE_TYPES = ("bare_metal", "virtual_machine")
#: where the shipped playbooks put the notebook environment (roles/notebook_env/defaults)
DEFAULT_NOTEBOOK_ENV = "/opt/jupyterhub-notebook"
#: configurer short names
CONFIGURERS = {"ansible": "multiplespawner.configurers.AnsibleConfigurer"}
_LOGIN_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")


class MachineStepError(SpawnError):
    """A step of the machine path failed; the message names the step and the reason."""

    def __init__(self, phase: str, reason: str):
        self.phase = phase
        super().__init__(f"The {phase} step failed: {reason}", reason=f"machine_{phase}", status_code=500)


def _reason(error: BaseException) -> str:
    if isinstance(error, SpawnException):  # JupyterHub 6 has .message; ldap_hooks' add jupyterhub_message
        return getattr(error, "jupyterhub_message", "") or error.message or str(error)
    text = str(error).strip()
    return text or type(error).__name__


# ---- one server's machine ---------------------------------------------------------------------
def _login_name(user_name: str) -> str:
    """The hub user's name as a login on the machine (kept when valid, else derived)."""
    name = user_name.lower()
    if _LOGIN_RE.match(name):
        return name
    cleaned = re.sub(r"[^a-z0-9_-]", "", name)[:20] or "user"
    return f"u{hashlib.sha256(user_name.encode()).hexdigest()[:8]}-{cleaned}"[:32]


def _machine_name(hub_id: str, user: str, server: str) -> str:
    raw = f"jh-{hub_id[:16]}-{user}-{server or 'default'}"
    cleaned = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")[:54]
    return f"{cleaned}-{secrets.token_hex(4)}"


def configurer_class(name: str):
    """A template's ``configurer.class``: a short name (``ansible``) or a dotted path."""
    return import_item(CONFIGURERS.get(name, name))


@dataclass
class _AdminLogin:
    """The operator's admin login on a pool host, in the shape a configurer expects of
    credentials: the key file, its public half, and the host key to pin."""

    client_key_path: Path
    client_public_key: str
    host_public_key: str
    known_hosts_line = ServerCredentials.known_hosts_line


class MachineLease:
    """The machine of one server: acquire it for a start, release it at stop or on failure.

    ``state`` (JSON, see :meth:`to_state`): ``kind`` (``pool`` or ``provider``),
    ``deployment``, ``machine`` (:meth:`Machine.to_state`; pool hosts as provider ``pool``),
    ``credentials`` (:meth:`ServerCredentials.to_state`: provider machines, and pool hosts with a
    configurer or the certificate authenticator), ``notebook_user``, and after a configure run
    ``config_hash`` and ``configured_at``.
    """

    def __init__(self, spawner, orchestrator: MachineOrchestrator, template_spec: dict,
                 deployment: dict, resources: dict, placeholders: dict | None = None,
                 state: dict | None = None):
        self.spawner = spawner
        self.placeholders = dict(placeholders or {})
        self.orchestrator = orchestrator
        self.template_spec = template_spec
        self.deployment = deployment
        self.resources = resources
        self.kind = POOL if template_spec["resource_type"] == "bare_metal" else "provider"
        authenticator = template_spec.get("authenticator") or {}
        self.authenticator = authenticator.get("class", "key")
        self.authenticator_kwargs = dict(authenticator.get("kwargs", {}))
        self.state: dict = dict(state or {})

    @property
    def log(self):
        return self.spawner.log

    @property
    def hosts(self) -> list[dict]:
        """A pool's hosts: the deployment's own ``hosts``, else the operator's
        ``c.MachineOrchestrator.pool_hosts`` for the deployment's name; empty if neither has any."""
        return self.deployment.get("hosts") or self.orchestrator.pool_hosts.get(self.deployment["name"], [])

    @property
    def held(self) -> bool:
        """True while a machine, claim or credentials may exist for this server."""
        return bool(self.state)

    @property
    def _server_credentials(self) -> bool:
        """Whether this server logs in with a per-server key (always, except plain pool hosts)."""
        return (self.kind != POOL or bool(self.template_spec.get("configurer"))
                or self.authenticator == "certificate")

    def to_state(self) -> dict:
        return dict(self.state)

    # -- checks at prepare() time -----------------------------------------------------------
    def check(self, child_class: type) -> None:
        """Refuse a template this path cannot run (a 500 :func:`~multiplespawner.errors.failed` naming the problem)."""
        name = self.template_spec["name"]
        if self.kind != POOL:
            self._check_provider()
        if not adapter_for(child_class).runs_on_machines:
            raise failed(
                f"Template {name!r}: {self.template_spec['resource_type']} templates "
                "need cloudsshspawner.CloudSSHSpawner (or a subclass) as their spawner.",
                "template_error",
            )
        if self.authenticator == "certificate" and not self.orchestrator.credential_store().ca_key_file:
            raise failed(
                f"Template {name!r} logs in with a certificate (authenticator: certificate), but "
                "the hub has no certificate authority: set c.CredentialStore.ca_key_file.",
                "template_error",
            )
        if self.kind == POOL and self.template_spec.get("configurer") and not self.orchestrator.pool_admin_key_file:
            raise failed(
                f"Template {name!r} configures bare_metal pool hosts, but the hub has no admin "
                "key for them: set c.MachineOrchestrator.pool_admin_key_file.",
                "template_error",
            )
        if self.kind == POOL and not self.hosts:
            deployment = self.deployment["name"]
            raise failed(
                f"Deployment {deployment!r} lists no hosts, and the hub has none for it: set "
                f'c.MachineOrchestrator.pool_hosts = {{"{deployment}": [{{"address": ..., "host_key": ...}}]}} '
                "or list hosts in the deployment.",
                "template_error",
            )

    def _check_provider(self) -> None:
        """Refuse (400, nothing made) a deployment whose provider this hub cannot load, naming
        the provider, the providers the hub has and what to configure."""
        provider, deployment = self.deployment["provider"], self.deployment["name"]
        try:
            provider_class(provider)
        except LookupError:
            why = f"this hub has no machine provider {provider!r}"
        except (ImportError, TypeError) as e:
            why = f"machine provider {provider!r} cannot be loaded ({e})"
        else:
            return
        raise SpawnError(
            f"Template {self.template_spec['name']!r} cannot be used here: its deployment "
            f"{deployment!r} asks for a machine from provider {provider!r}, but {why}. Machine "
            f"providers this hub has: {', '.join(available())}. The operator can point the deployment "
            "at one of them (its options in c.MachineOrchestrator.provider_options) or install a "
            f"package that registers {provider!r} in the entry point group multiplespawner.providers; "
            "until then choose another template.",
            reason="template_error", status_code=400,
        )

    async def claim_pool_host(self) -> None:
        """Claim a pool host with capacity left (called before anything starts).

        Raises :class:`PoolFullError` (503, reason ``capacity``) saying that the pool is full:
        the spawn is refused at once.
        """
        host = await claim_host(self.spawner, self.deployment["name"], self.hosts, self.orchestrator.drain_file)
        host_id = pool_host_id(host)
        self.state = {
            "kind": POOL,
            "deployment": self.deployment["name"],
            "machine": Machine(
                id=host_id, provider=POOL, host=host["address"], port=int(host.get("port", 22)),
                ssh_user=host.get("username", ""), host_public_key=host["host_key"],
            ).to_state(),
        }
        self.log.info("%s: claimed pool host %s of %s", self.spawner._log_name, host_id, self.deployment["name"])

    # -- acquire ------------------------------------------------------------------------------
    async def acquire(self, event) -> dict:
        """Create/wait/configure as the template asks; return the child's connection traits.

        ``event(progress, message)`` reports progress. On any failure everything made so far
        is released and :class:`MachineStepError` names the step (a full pool raises
        :class:`PoolFullError` as it is).
        """
        clock = PhaseClock(self.template_spec["name"], self.deployment["provider"], "create")
        try:
            if self.kind == POOL:
                if not self.state:
                    await self.claim_pool_host()
                machine = Machine.from_state(self.state["machine"])
                event(20, f"Using pool host {machine.host}:{machine.port} of {self.deployment['name']}")
                credentials = None
                if self._server_credentials:
                    self.state["notebook_user"] = machine.ssh_user or _login_name(self.spawner.user.name)
                    name = _machine_name(self.orchestrator.hub_id, self.spawner.user.name, self.spawner.name)
                    credentials = await self._credentials(name, machine.host_public_key)
            else:
                await reap_once(self.spawner, self.orchestrator)
                machine, credentials = await self._create(event)
                clock.enter("wait")
                await self._wait(machine, event)
            clock.enter("configure")
            await self._configure(machine, credentials, event)
            if self.template_spec.get("configurer"):  # no configurer: no configure phase to time
                clock.done()
            return self._child_traits(machine, credentials)
        except BaseException as e:
            phase = clock.phase
            self.log.error("%s: machine %s step failed: %s", self.spawner._log_name, phase, _reason(e))
            await asyncio.shield(self.release())
            if isinstance(e, PoolFullError) or (
                    isinstance(e, (asyncio.CancelledError, HTTPError)) and not isinstance(e, SpawnException)):
                raise
            raise MachineStepError(phase, _reason(e)) from e

    async def _credentials(self, name: str, host_public_key: str = "") -> ServerCredentials:
        """The server's key pair (and certificate, for the certificate authenticator); in state."""
        principals = [self.state["notebook_user"]] if self.authenticator == "certificate" else None
        credentials = await self.orchestrator.credential_store().create(
            name, certificate_principals=principals, host_public_key=host_public_key,
            certificate_validity=self.authenticator_kwargs.get("validity_seconds"),
        )
        self.state["credentials"] = credentials.to_state()
        return credentials

    async def _create(self, event):
        spawner, orch = self.spawner, self.orchestrator
        provider_name = self.deployment["provider"]
        provider = orch.provider(provider_name)
        name = _machine_name(orch.hub_id, spawner.user.name, spawner.name)
        self.state = {
            "kind": "provider",
            "deployment": self.deployment["name"],
            "provider": provider_name,
            "notebook_user": _login_name(spawner.user.name),
        }
        credentials = await self._credentials(name)
        labels = {
            HUB_LABEL: orch.hub_id,
            f"{LABEL_PREFIX}.user": spawner.user.name,
            f"{LABEL_PREFIX}.server": spawner.name or "",
        }
        spec = MachineSpec(
            name=name,
            deployment=dict(self.deployment),
            resources=Resources(**{k: v for k, v in self.resources.items() if k in ("cpu", "memory_mb", "gpus")}),
            ssh_user=orch.admin_user,
            authorized_key=credentials.client_public_key,
            host_key_private=credentials.host_private_key,
            labels=labels,
        )
        event(12, f"Creating a machine with {provider_name} ({self.deployment['name']})")
        machine = await provider.create(spec)
        if machine.host_public_key.split()[:2] != credentials.host_public_key.split()[:2]:
            self.state["machine"] = machine.to_state()
            raise ProviderError(f"machine {machine.id} reports a host key other than the one generated for it")
        self.state["machine"] = machine.to_state()
        event(16, f"Machine {machine.id[:12]} created; sshd on {machine.host}:{machine.port}")
        return machine, credentials

    async def _wait(self, machine: Machine, event) -> None:
        event(18, f"Waiting for sshd on {machine.host}:{machine.port} with the pinned host key")
        provider = self.orchestrator.provider(self.state["provider"])
        await provider.wait_ready(machine, self.orchestrator.ready_timeout)
        event(20, "Machine answers over SSH")

    def _configurer(self):
        spec = self.template_spec.get("configurer")
        if not spec:
            return None
        cls = configurer_class(spec["class"])
        options = resolve_placeholders(dict(spec.get("options", {})), self.placeholders)
        return cls(parent=self.spawner, **options)

    async def _variables(self, credentials: ServerCredentials) -> dict:
        """The per-server playbook variables: the notebook user, its uid and how it logs in."""
        variables = {"notebook_user_name": self.state["notebook_user"]}
        uid = self.spawner.environment.get("NB_UID") if isinstance(self.spawner.environment, dict) else None
        if uid:
            variables["notebook_user_uid"] = str(uid)
        if self.authenticator == "certificate":
            variables["notebook_user_authorized_key"] = ""
            variables["sshd_tunnel_trusted_user_ca_key"] = await self.orchestrator.credential_store().ca_public_key()
        else:
            variables["notebook_user_authorized_key"] = credentials.client_public_key
        return variables

    async def _admin_login(self, machine: Machine) -> tuple[Machine, _AdminLogin]:
        """The pool host as the operator's admin account sees it, and that account's key."""
        key_path = Path(self.orchestrator.pool_admin_key_file)
        key = await asyncio.to_thread(asyncssh.read_private_key, str(key_path))
        login = _AdminLogin(key_path, key.export_public_key("openssh").decode().strip(), machine.host_public_key)
        return dataclasses.replace(machine, ssh_user=self.orchestrator.admin_user), login

    async def _configure(self, machine: Machine, credentials, event) -> None:
        configurer = self._configurer()
        if configurer is None:
            return
        event(22, f"Configuring the machine with {type(configurer).__name__}")
        variables = await self._variables(credentials)
        if self.kind != POOL:  # a created machine is new: nothing was configured on it before
            await self._run_configurer(configurer, machine, credentials, variables, None, event)
            return
        host = (self.deployment["name"], machine.id)
        login_machine, login = await self._admin_login(machine)
        async with host_lock(host):  # one run per host at a time
            previous = last_config_hash(self.spawner, host)
            remember_config_hash(host, None)  # unknown until the run succeeds
            await self._run_configurer(configurer, login_machine, login, variables, previous, event)
            remember_config_hash(host, self.state["config_hash"])

    async def _run_configurer(self, configurer, machine, login, variables, previous, event) -> None:
        result = await configurer.configure(
            machine, login, variables,
            progress_callback=lambda message: event(25, f"Configuring: {message}"),
            previous_hash=previous,
        )
        self.state["config_hash"] = result.config_hash
        self.state["configured_at"] = time.time()
        event(28, "Machine already configured" if result.skipped
              else f"Machine configured ({result.changed} changes)")

    async def start_failed(self, error: BaseException):
        """The child did not start: release the machine and raise the error naming the step."""
        self.log.error("%s: machine start step failed: %s", self.spawner._log_name, _reason(error))
        await asyncio.shield(self.release())
        if isinstance(error, asyncio.CancelledError):
            raise error
        raise MachineStepError("start", _reason(error)) from error

    def _notebook_env(self) -> str:
        options = (self.template_spec.get("configurer") or {}).get("options", {})
        return options.get("variables", {}).get("notebook_env_path", DEFAULT_NOTEBOOK_ENV)

    def _child_traits(self, machine: Machine, credentials) -> dict:
        """What CloudSSHSpawner needs for this machine (kept in the child kwargs of the record)."""
        traits = {
            "remote_hosts": [f"[{machine.host}]:{machine.port}"],
            "host_key": machine.host_public_key,
            "trust_on_first_use": False,
        }
        if machine.ssh_user:  # pool host entry with a fixed login
            traits["remote_username"] = machine.ssh_user
        if credentials is not None:
            traits["ssh_key_path"] = str(credentials.client_key_path)
            traits["ssh_certificate_path"] = str(credentials.certificate_path or "")
            traits["remote_username"] = self.state["notebook_user"]
        prepared_here = self.kind != POOL or self.template_spec.get("configurer")
        if prepared_here and "cmd" not in self.template_spec["spawner"].get("kwargs", {}):
            traits["cmd"] = [f"{self._notebook_env()}/bin/jupyterhub-singleuser"]
        return traits

    # -- release ------------------------------------------------------------------------------
    async def release(self) -> None:
        """Destroy the machine (or return the pool host) and remove the credentials; idempotent.

        Errors are logged, not raised: release runs on failure paths and at stop.
        """
        state, who = self.state, owner(self.spawner)
        if not state:
            drop_claim(who)
            return
        machine = state.get("machine")
        try:
            if state.get("kind") == POOL:
                if machine:
                    self.log.info("%s: returned pool host %s", self.spawner._log_name, machine["id"])
            elif machine:
                provider = self.orchestrator.provider(state["provider"])
                await provider.destroy(machine["id"])
                self.log.info("%s: destroyed %s machine %s", self.spawner._log_name, state["provider"], machine["id"])
        except Exception as e:
            self.log.error("%s: could not destroy machine %s: %s; it stays labelled for reaping",
                           self.spawner._log_name, machine and machine.get("id"), e)
        finally:
            drop_claim(who)
            if state.get("kind") == POOL:
                publish_occupancy(self.spawner, state["deployment"], self.hosts, exclude=who)
            if state.get("credentials"):
                try:
                    await self.orchestrator.credential_store().remove(state["credentials"])
                except Exception as e:
                    self.log.error("%s: could not remove SSH credentials: %s", self.spawner._log_name, e)
            self.state = {}


def lease_for(spawner, orchestrator, template_spec: dict, deployment: dict | None,
              resources: dict, placeholders: dict | None = None, state: dict | None = None) -> MachineLease | None:
    """A :class:`MachineLease` if the template is machine-backed, else None."""
    if template_spec["resource_type"] not in MACHINE_RESOURCE_TYPES:
        return None
    if deployment is None:
        raise failed(f"Template {template_spec['name']!r} has no deployment for its provider.", "template_error")
    return MachineLease(spawner, orchestrator, template_spec, deployment, resources, placeholders, state)


def lease_record(lease: MachineLease) -> dict:
    """What the spawner's record needs to rebuild the lease after a restart (JSON)."""
    return {"template_spec": lease.template_spec, "deployment": lease.deployment, "resources": lease.resources}


def lease_from_record(spawner, orchestrator, record: dict, state: dict | None) -> MachineLease:
    """The lease of a server rebuilt from its record and lease state (after a hub restart)."""
    lease = MachineLease(spawner, orchestrator, record["template_spec"], record["deployment"],
                         record["resources"], state=state)
    if lease.kind == POOL and lease.held:  # the gauges start empty in a new hub process
        publish_occupancy(spawner, lease.deployment["name"], lease.hosts)
    return lease
