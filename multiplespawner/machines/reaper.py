"""Orphan machines: machines labelled with this hub's id that no server owns are destroyed.

The fleet's ``machines`` and ``reap`` (:mod:`.inventory`, in the hub) use the same functions.

Once per hub process, when the first machine-backed server's state is loaded at start-up or
else before the first machine is created, every provider used by a ``virtual_machine``
deployment lists the machines labelled with this hub's id; those that no server's state names
are destroyed and logged. Every machine creation in the process waits for that check, so it
never sees a machine that is still being made.
"""

from __future__ import annotations

import asyncio

from ..providers.base import LABEL_PREFIX
from .pool import persisted_leases
from .settings import MachineOrchestrator

_REAP_TASK: asyncio.Task | None = None


def machine_owners(spawner) -> dict[tuple[str, str], str]:
    """(provider name, machine id) -> ``user/name`` of the server whose state in the hub
    database holds that provider machine."""
    return {
        (lease["machine"].get("provider"), lease["machine"].get("id")): owner
        for owner, lease in persisted_leases(spawner).items()
        if lease.get("kind") == "provider" and lease.get("machine")
    }


def labelled_server(machine) -> str:
    """``user/name`` the machine's labels name (``?`` for a missing part)."""
    return f"{machine.labels.get(f'{LABEL_PREFIX}.user', '?')}/{machine.labels.get(f'{LABEL_PREFIX}.server', '?')}"


async def hub_machines(orchestrator: MachineOrchestrator, catalogue) -> tuple[list, list[str]]:
    """``([(provider name, machine), ...], [problem, ...])``: the machines labelled with this
    hub's id of every provider a ``virtual_machine`` deployment uses, and one line per provider
    that could not list them (one broken provider does not hide the others)."""
    found, problems = [], []
    for name in sorted({d["provider"] for d in catalogue.deployments.get("virtual_machine", [])}):
        try:
            machines = await orchestrator.provider(name).list(orchestrator.hub_id)
        except Exception as e:
            problems.append(f"cannot list {name} machines of hub {orchestrator.hub_id}: {e}")
            continue
        found += [(name, machine) for machine in machines]
    return found, problems


async def reap_orphans(spawner, orchestrator: MachineOrchestrator, catalogue, busy=frozenset(),
                       dry_run: bool = False) -> tuple[list[dict], list[str]]:
    """Destroy machines labelled with this hub's id that no server owns; return them
    (``{"provider", "id", "labelled_for"}``) and the providers' listing problems.

    At start-up this runs before this process creates any machine (see :func:`reap_once`), so
    every machine of this hub that exists then belongs to a server whose state is in the
    database, or to none. Run later (the fleet's ``reap``), ``busy`` names the servers
    (``user/name``) the hub is starting or running now: a machine labelled for one of them may
    be one whose creation is under way, not yet in the server's state, and is kept.
    ``dry_run``: destroy nothing, return what would be destroyed.
    """
    log = orchestrator.log
    owned = machine_owners(spawner)
    machines, problems = await hub_machines(orchestrator, catalogue)
    for problem in problems:
        log.warning("%s; not reaped", problem)
    reaped = []
    for name, machine in machines:
        if (name, machine.id) in owned or labelled_server(machine) in busy:
            continue
        gone = {"provider": name, "id": machine.id, "labelled_for": labelled_server(machine)}
        if dry_run:
            reaped.append(gone)
            continue
        log.warning("Reaping %s machine %s (server %s): labelled for hub %s, owned by no server",
                    name, machine.id, labelled_server(machine), orchestrator.hub_id)
        try:
            await orchestrator.provider(name).destroy(machine.id)
            reaped.append(gone)
        except Exception as e:
            log.error("Could not reap %s machine %s: %s", name, machine.id, e)
    return reaped, problems


def reap_once(spawner, orchestrator: MachineOrchestrator) -> asyncio.Task:
    """The one reaping task of this hub process (started at the first call, on the running loop).

    Raises RuntimeError (and schedules nothing) without a running loop. A reap that failed as
    a whole (e.g. the catalogue could not be read) is logged; it is not retried in this process.
    """
    global _REAP_TASK
    if _REAP_TASK is None:
        asyncio.get_running_loop()  # RuntimeError if there is none: nothing scheduled yet

        async def reap():
            try:
                catalogue = await spawner.catalogue_source.get()
                reaped, _ = await reap_orphans(spawner, orchestrator, catalogue)
                orchestrator.log.info("Orphan check for hub %s: %d machine(s) reaped", orchestrator.hub_id, len(reaped))
            except Exception as e:
                orchestrator.log.error("Orphan check for hub %s failed: %s", orchestrator.hub_id, e)

        _REAP_TASK = asyncio.ensure_future(reap())
    return _REAP_TASK
