"""The configurer contract: prepare a created machine for one notebook server.

A configurer is handed a reachable :class:`~multiplespawner.providers.base.Machine` (host, port,
admin account, pinned host key), the credentials to log in with as that account (the server's
:class:`~multiplespawner.machines.credentials.ServerCredentials` on a created machine, the operator's
admin key on a pool host: anything with ``client_key_path``, ``client_public_key`` and
``known_hosts_line(host, port)``) and a dict of variables (notebook user name, uid, how the
notebook user logs in, options from the template). It must:

* never block the event loop (run blocking tools in bounded threads or subprocesses);
* connect only with the given client key and only to a machine presenting the pinned host
  key;
* report progress through ``progress_callback(message)`` (a plain function or a coroutine
  function; the spawner turns each message into a progress event);
* raise :class:`ConfigurerError` with a message fit for the user (which step failed, on which
  host, why) when the machine could not be prepared;
* return a :class:`ConfigureResult` whose ``config_hash`` covers everything that decides the
  outcome (host, host key, playbooks, variables). Given that hash back as ``previous_hash``, it
  skips the work: the machine is already configured that way;
* skip a part of the work only when the machine's ``prepared`` record (what its image's build
  prepared) states, fact by fact, exactly what that part would make, and name it in
  ``ConfigureResult.skipped_roles``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from traitlets.config import LoggingConfigurable

ProgressCallback = Callable[[str], "Awaitable[None] | None"]


class ConfigurerError(Exception):
    """Configuring a machine failed; the message names the step, the host and the reason."""


@dataclass
class ConfigureResult:
    """What one ``configure`` call did."""

    config_hash: str  #: keep in spawner state; pass back as ``previous_hash``
    skipped: bool = False  #: True if ``previous_hash`` matched and nothing ran
    changed: int = 0  #: how many steps changed something on the machine
    stats: dict = field(default_factory=dict)  #: per-status step counts (ok, changed, ...)
    #: parts of the configuration not run because the machine's image already holds them
    skipped_roles: list = field(default_factory=list)


async def report(progress_callback: ProgressCallback | None, message: str) -> None:
    """Call ``progress_callback(message)``, awaiting it if it is a coroutine function."""
    if progress_callback is None:
        return
    result = progress_callback(message)
    if inspect.isawaitable(result):
        await result


class Configurer(LoggingConfigurable):
    """Base class; subclasses implement :meth:`configure` (see the module docstring)."""

    async def configure(
        self,
        machine,
        credentials,
        variables: dict,
        progress_callback: ProgressCallback | None = None,
        previous_hash: str | None = None,
    ) -> ConfigureResult:
        raise NotImplementedError
