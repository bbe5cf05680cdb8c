"""The small async interface every machine provider implements.

Contract:

* ``create(spec)`` makes one machine for one notebook server, labelled with ``spec.labels``
  (hub id, user, server name) so :meth:`Provider.list` can find it after a hub restart. The
  machine accepts SSH logins for ``spec.ssh_user`` with ``spec.authorized_key`` only, and
  presents ``spec.host_key_private`` as its SSH host key, so the caller pins the matching
  public key before the first connection (no trust on first use). ``create`` returns as soon
  as the machine exists; if it fails part-way it removes what it made before raising.
* ``wait_ready(machine, timeout)`` returns once sshd on ``machine.host:machine.port`` answers
  with the pinned host key; it raises :class:`ProviderError` on timeout.
* ``destroy(machine_id)`` removes the machine and everything ``create`` made for it; calling
  it for a machine that is already gone is not an error.
* ``list(hub_id)`` returns the machines this provider holds for that hub.

All methods are coroutines and never block the event loop: blocking client libraries run in
a bounded thread pool (:meth:`Provider.run_blocking`).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

LABEL_PREFIX = "org.jupyterhub-multiplespawner"


class ProviderError(Exception):
    """A provider could not do what was asked; the message is fit to show to the user."""


@dataclass(frozen=True)
class Resources:
    """What the user chose: CPUs (may be fractional), memory in MiB, GPUs."""

    cpu: float = 1
    memory_mb: int = 1024
    gpus: int = 0


@dataclass(frozen=True)
class MachineSpec:
    """Everything a provider needs to create one machine."""

    name: str  #: unique, DNS-safe name for the machine (e.g. "jh-<hub>-<user>-<server>")
    deployment: dict  #: the catalogue's deployment entry (provider, image, options...)
    resources: Resources
    ssh_user: str  #: the account the hub logs in as
    authorized_key: str  #: OpenSSH public key line of the per-server client key
    host_key_private: str  #: OpenSSH private host key the machine must present
    labels: dict = field(default_factory=dict)  #: hub id, user, server: for list() and reaping


@dataclass
class Machine:
    """A created machine and how to reach it; JSON-serialisable for spawner state."""

    id: str  #: the provider's id for destroy()
    provider: str  #: the provider's name
    host: str
    port: int
    ssh_user: str
    host_public_key: str  #: OpenSSH public key line the machine presents (pinned)
    labels: dict = field(default_factory=dict)
    #: what the machine's image declares it has already prepared, as the image recorded it
    #: when it was built (e.g. ``{"notebook_env": {"path": ..., "packages": [...], ...}}``, see
    #: images/vm/build.py); a configurer compares it with what it would install and skips only
    #: what matches. Empty: nothing is known, everything is configured. Set by ``create``;
    #: machines found again by ``list`` or read back from spawner state carry {} (they were
    #: configured when they were made). Not part of a machine's identity (equality).
    prepared: dict = field(default_factory=dict, compare=False)

    def to_state(self) -> dict:
        """The machine for spawner state; without ``prepared`` (kilobytes of package list that
        only the configure step right after ``create`` uses)."""
        state = asdict(self)
        del state["prepared"]
        return state

    @classmethod
    def from_state(cls, state: dict) -> "Machine":
        return cls(**state)


class Provider(ABC):
    """Base class: subclasses set ``name`` and implement the four coroutines."""

    name: str = ""
    #: threads for blocking client libraries, shared by every instance of a provider class
    max_threads: int = 4
    _executor: ThreadPoolExecutor | None = None

    @classmethod
    def _pool(cls) -> ThreadPoolExecutor:
        if cls.__dict__.get("_executor") is None:
            cls._executor = ThreadPoolExecutor(cls.max_threads, thread_name_prefix=f"provider-{cls.name}")
        return cls._executor

    async def run_blocking(self, func, *args, **kwargs):
        """Run a blocking call in this provider's bounded thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), lambda: func(*args, **kwargs))

    async def create_in_thread(self, create, destroy, *args) -> Machine:
        """``create(*args)`` (blocking, returns the new :class:`Machine`) in the thread pool.

        A thread cannot be interrupted: if the caller is cancelled while ``create`` runs, the
        machine it still makes is removed with ``destroy(machine.id)`` (blocking, in the pool)
        as soon as it exists, so a cancelled spawn leaves no machine behind.
        """
        future = self._pool().submit(create, *args)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.add_done_callback(lambda done: self._destroy_made(done, destroy))
            raise

    def _destroy_made(self, future, destroy) -> None:
        if not future.cancelled() and future.exception() is None:
            machine_id = future.result().id
            log = getattr(self, "log", None) or logging.getLogger(type(self).__module__)
            log.info("Removing %s machine %s: its creation was cancelled", self.name, machine_id)
            self._pool().submit(destroy, machine_id)

    @abstractmethod
    async def create(self, spec: MachineSpec) -> Machine: ...

    @abstractmethod
    async def wait_ready(self, machine: Machine, timeout: float) -> None: ...

    @abstractmethod
    async def destroy(self, machine_id: str) -> None: ...

    @abstractmethod
    async def list(self, hub_id: str) -> list[Machine]: ...


async def wait_for_ssh(host: str, port: int, host_public_key: str, timeout: float) -> None:
    """Return once sshd on host:port completes a key exchange with the pinned host key.

    No client credentials are offered: reaching the authentication stage proves the machine is
    up and presents ``host_public_key``. A different host key is refused at once (it is not a
    machine we created); other failures are retried until ``timeout``.
    """
    import asyncssh

    pinned = asyncssh.import_known_hosts(f"[{host}]:{port} {host_public_key.strip()}\n")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_error: Exception | None = None
    while loop.time() < deadline:
        try:
            conn = await asyncio.wait_for(
                asyncssh.connect(
                    host, port, known_hosts=pinned, username="probe",
                    client_keys=None, agent_path=None, password=None,
                    preferred_auth="publickey",
                ),
                timeout=min(10, max(1, deadline - loop.time())),
            )
            conn.close()  # only possible if the machine lets anyone in: still reachable
            return
        except asyncssh.PermissionDenied:
            return
        except asyncssh.HostKeyNotVerifiable as e:
            raise ProviderError(
                f"{host}:{port} presents a host key other than the one pinned at creation: {e}"
            ) from e
        except (OSError, asyncio.TimeoutError, asyncssh.Error) as e:
            last_error = e
            await asyncio.sleep(1)
    raise ProviderError(f"{host}:{port} did not answer over SSH within {timeout:.0f}s ({last_error})")
