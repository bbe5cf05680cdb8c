"""The suite's additions to the hub's own REST API: the machine inventory and the reaper.

    GET  /hub/api/multiplespawner/machines        {"hub_id", "machines": [...], "problems": [...]}
    POST /hub/api/multiplespawner/machines/reap   body {"dry_run": bool}
                                                  -> {"dry_run", "reaped": [...], "problems"}

Registered by the operator (``c.JupyterHub.extra_handlers = multiplespawner.hub_api.HANDLERS``).
They run in the hub because only the hub can answer: it holds the providers' credentials
(``c.MachineOrchestrator.provider_options``), the database whose spawner states say which
server owns which machine, and the knowledge of which servers are being started right now (a
machine whose creation is under way is in no state yet and must not be reaped). Reaping is the
very function the hub runs at start-up (:func:`.machines.reaper.reap_orphans`).

Callers need ``admin:servers`` (hub admins) or :data:`MACHINES_SCOPE` (the fleet service's
role); anyone else gets 403. JupyterHub 3.1 marked ``extra_handlers`` deprecated in favour of
services; a service cannot see which spawns are under way, hence this one exception.
"""

from __future__ import annotations

import json

from jupyterhub.apihandlers.base import APIHandler
from tornado import web

from .catalogue import CatalogueError
from .machines.reaper import hub_machines, labelled_server, machine_owners, reap_orphans
from .spawner import MultipleSpawner

#: the custom scope a caller other than a hub admin needs (define it in c.JupyterHub.custom_scopes)
MACHINES_SCOPE = "custom:machines:manage"


class MachinesHandler(APIHandler):
    """``GET``: every machine labelled with this hub's id, with the server that owns it."""

    def check_allowed(self) -> None:
        if self.current_user is None:
            raise web.HTTPError(403, "Missing or invalid credentials.")
        if not {"admin:servers", MACHINES_SCOPE} & set(self.expanded_scopes):
            raise web.HTTPError(403, f"listing and reaping machines needs admin:servers or {MACHINES_SCOPE}")

    async def context(self):
        """(a MultipleSpawner built from the hub's configuration, for its catalogue, machine
        settings and database; the catalogue in force). 409 if there is no usable catalogue."""
        spawner = MultipleSpawner(config=self.settings["config"], _deprecated_db_session=self.db,
                                  stop_orphaned_processes=False)
        try:
            catalogue = await spawner.catalogue_source.get()
        except CatalogueError as e:
            raise web.HTTPError(409, f"the template catalogue cannot be read: {e}")
        return spawner, catalogue

    def busy(self) -> set[str]:
        """``user/name`` of every server the hub is starting, running or stopping now."""
        return {f"{user.name}/{name}" for user in self.users.values()
                for name, spawner in user.spawners.items() if spawner.active}

    async def get(self):
        self.check_allowed()
        spawner, catalogue = await self.context()
        orchestrator = spawner._orchestrator
        machines, problems = await hub_machines(orchestrator, catalogue)
        owners, busy = machine_owners(spawner), self.busy()
        rows = []
        for provider, machine in machines:
            owner = owners.get((provider, machine.id))
            rows.append({"provider": provider, "id": machine.id, "host": machine.host, "port": machine.port,
                         "labelled_for": labelled_server(machine), "owner": owner,
                         "orphan": owner is None and labelled_server(machine) not in busy})
        self.finish(json.dumps({"hub_id": orchestrator.hub_id, "machines": rows, "problems": problems}))


class ReapHandler(MachinesHandler):
    """``POST``: destroy the machines no server owns (``dry_run``: only name them)."""

    async def post(self):
        self.check_allowed()
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict) or set(body) - {"dry_run"} or not isinstance(body.get("dry_run", False), bool):
            raise web.HTTPError(400, 'the body must be {"dry_run": true|false}')
        spawner, catalogue = await self.context()
        orchestrator = spawner._orchestrator
        dry_run = body.get("dry_run", False)
        reaped, problems = await reap_orphans(spawner, orchestrator, catalogue, busy=self.busy(), dry_run=dry_run)
        self.finish(json.dumps({"dry_run": dry_run, "reaped": reaped, "problems": problems}))


#: for ``c.JupyterHub.extra_handlers`` (the hub adds its /hub prefix)
HANDLERS = [
    (r"/api/multiplespawner/machines", MachinesHandler),
    (r"/api/multiplespawner/machines/reap", ReapHandler),
]
