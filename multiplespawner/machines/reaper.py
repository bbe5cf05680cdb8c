"""Orphan machines: machines labelled with this hub's id that no server owns are destroyed.

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


async def reap_orphans(spawner, orchestrator: MachineOrchestrator, catalogue) -> list[str]:
    """Destroy machines labelled with this hub's id that no server owns; return their ids.

    Runs before this process creates any machine (see :func:`reap_once`), so every machine of
    this hub that exists then belongs to a server whose state is in the database, or to none.
    """
    log = orchestrator.log
    owned = {
        (lease["machine"].get("provider"), lease["machine"].get("id"))
        for lease in persisted_leases(spawner).values()
        if lease.get("kind") == "provider" and lease.get("machine")
    }
    names = sorted({d["provider"] for d in catalogue.deployments.get("virtual_machine", [])})
    reaped = []
    for name in names:
        try:
            provider = orchestrator.provider(name)
            machines = await provider.list(orchestrator.hub_id)
        except Exception as e:  # one broken provider must not stop the others
            log.warning("Cannot list %s machines of hub %s for reaping: %s", name, orchestrator.hub_id, e)
            continue
        for machine in machines:
            if (name, machine.id) in owned:
                continue
            log.warning(
                "Reaping %s machine %s (user %s, server %r): labelled for hub %s, owned by no server",
                name, machine.id, machine.labels.get(f"{LABEL_PREFIX}.user", "?"),
                machine.labels.get(f"{LABEL_PREFIX}.server", "?"), orchestrator.hub_id,
            )
            try:
                await provider.destroy(machine.id)
                reaped.append(machine.id)
            except Exception as e:
                log.error("Could not reap %s machine %s: %s", name, machine.id, e)
    return reaped


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
                reaped = await reap_orphans(spawner, orchestrator, catalogue)
                orchestrator.log.info("Orphan check for hub %s: %d machine(s) reaped", orchestrator.hub_id, len(reaped))
            except Exception as e:
                orchestrator.log.error("Orphan check for hub %s failed: %s", orchestrator.hub_id, e)

        _REAP_TASK = asyncio.ensure_future(reap())
    return _REAP_TASK
