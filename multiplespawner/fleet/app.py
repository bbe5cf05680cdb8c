"""The fleet service: list, stop, extend and notify users' servers in bulk, drain pool hosts,
list and reap provider machines (a JupyterHub service, REST only).

Run by the hub as a managed service with a role of its own (see docs/fleet.md)::

    c.JupyterHub.services = [{
        "name": "fleet",
        "url": "http://127.0.0.1:10102",
        "command": [sys.executable, "-m", "multiplespawner.fleet",
                    "--catalogue-path=/etc/jupyterhub/templates"],
    }]
    c.JupyterHub.load_roles = [{"name": "fleet-service", "services": ["fleet"], "scopes": [
        "list:users", "read:users:groups", "read:servers", "admin:server_state", "delete:servers"]}]

Callers authenticate with a JupyterHub API token (``Authorization: token ...``; no cookies, so
no cross-site requests); what they may see and stop follows from its scopes (:mod:`.access`).
The service reads the servers through the hub's REST API and stops them through it, with its
own token; it never imports spawner, SSH or Docker code.

REST API, relative to the service prefix (JSON)::

    GET  api/servers?FILTER...           {"servers": [row, ...]} (rows: .servers.server_rows)
    POST api/servers/stop                body {"filter": {...}, "all": bool, "dry_run": bool,
                                               "only": ["user/name", ...], "concurrency": N}
                                         -> {"dry_run", "results": [{"server", "result",
                                             "reason"}], "counts": {result: n}}
    POST api/servers/extend              body as a stop's plus {"minutes": N}: N more minutes for
                                         each running session, within its template's maximum
                                         (results extended / refused with the reason)
    POST api/servers/notify              body as a stop's plus {"message": TEXT,
                                         "expires_minutes": N}: shown on the users' hub pages
    GET  api/machines                    the hub's provider machines and their owners
    POST api/machines/reap               body {"dry_run": bool}: the hub reaps the orphans
    GET  api/audit[?limit=N]             the audit trail, newest first (a course manager's own)
    GET  api/hosts                       {"drained": {HOST: {"by", "time"}}}
    POST api/hosts/drain                 body {"host": "ADDRESS[:PORT]", "stop": bool}: the pool
                                         host takes no new servers (``stop``: its servers are
                                         stopped) -> {"host", "drained", "results"}
    POST api/hosts/undrain               body {"host": ...}: it takes servers again

Filters (query arguments, or the ``filter`` object's strings or lists of strings):
``template``, ``provider``, ``group``, ``state`` (running, pending, queued, stopping, failed), ``older_than``
and ``idle_for`` (``30m``, ``2h``, ``1d``), ``host`` (pool host or machine, by id or address),
``server`` (``user``, ``user/`` or ``user/name``). A stop needs a filter or ``"all": true``;
``only`` limits it to the servers a caller confirmed (the CLI sends what it showed). A
course manager naming another course's template or server gets 403, as do draining and the
machines (a pool host or provider serves every course: hub admins and unfiltered managers
only); every malformed input a 400 with a message; nothing is changed in either case. The hub
files (drain, extension, notice: :mod:`multiplespawner.drain`, ``.extensions``, ``.notices``)
are written in worker threads, one write at a time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from jupyterhub.services.auth import HubAuthenticated
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.log import app_log
from traitlets import Float, Integer, List, Unicode, default

from ..catalogue import CatalogueError, CataloguePolicy, CatalogueSource
from ..classes import locate_spawner_class
from ..drain import MAX_HOST_LENGTH, read_drained, set_drained
from ..extensions import read_extensions, set_extension
from ..notices import MAX_MESSAGE, add_notice
from ..service import ServiceApp
from .access import MANAGE_SCOPE, Manager, manager_from_scopes
from .audit import AuditLog
from .hub import HubAPIError, HubClient
from .servers import FilterError, ServerFilter, parse_filter, plan_extension, server_rows, session_deadlines

#: largest request body (a stop request) in bytes
MAX_BODY_BYTES = 64 * 1024
#: the audit file's name in the first catalogue directory, beside the editor's .history.jsonl
AUDIT_FILE = ".fleet-history.jsonl"


class BaseHandler(HubAuthenticated, web.RequestHandler):
    """Token-authenticated JSON handler; every refusal is a JSON ``{status, message}``."""

    def get_login_url(self):
        raise web.HTTPError(403, "send a JupyterHub API token: Authorization: token <token>")

    def manager(self) -> Manager:
        """The caller as a :class:`Manager`, or 403 saying which permission is missing."""
        user = self.current_user
        if user is None:
            raise web.HTTPError(403, "send a JupyterHub API token (Authorization: token ...) of a user "
                                     "allowed to use this service")
        manager = manager_from_scopes(user["name"], user.get("scopes"))
        if manager is not None:
            return manager
        raise web.HTTPError(403, f"{user['name']} may not manage servers: that needs the hub's admin:servers "
                                 f"permission, or {MANAGE_SCOPE} (or {MANAGE_SCOPE}!group=<course> for a "
                                 "course's servers); ask the hub's administrators")

    def write_error(self, status_code, **kwargs):
        """Every error as JSON ``{status, message}`` (tornado's reason phrase if no message)."""
        error = kwargs["exc_info"][1] if "exc_info" in kwargs else None
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code,
                                "message": getattr(error, "log_message", None) or self._reason}))

    def blocking(self, func, *args):
        return asyncio.get_running_loop().run_in_executor(self.settings["executor"], func, *args)

    async def templates(self) -> dict:
        """Template name -> resource type and tags, from the catalogue in force (a broken edit
        keeps the last good one; no catalogue at all: no templates, so only unfiltered managers
        see servers)."""
        source: CatalogueSource = self.settings["catalogue"]
        try:
            catalogue = await source.get()
        except CatalogueError:
            return {}
        return {name: {"resource_type": t.resource_type, "tags": t.spec.get("tags", []),
                       "max_lifetime_minutes": t.lifetime.max if t.lifetime else None}
                for name, t in catalogue.templates.items()}

    def extensions(self) -> dict:
        """The extension file's content (blocking; {} without one; 409 if unreadable)."""
        path = self.settings["extension_file"]
        try:
            return read_extensions(path) if path else {}
        except ValueError as e:
            raise web.HTTPError(409, str(e))

    async def visible_rows(self, manager: Manager, wanted: ServerFilter) -> list[dict]:
        """The servers ``wanted`` names that ``manager`` may manage; 403 if it names a template
        or server of someone else's course, 502 if the hub does not answer."""
        templates = await self.templates()
        for name in sorted(wanted.template):
            reason = manager.refusal(name, templates.get(name, {}).get("tags", []))
            if reason:
                raise web.HTTPError(403, reason)
        try:
            failed = not wanted.state or "failed" in wanted.state  # stopped servers are read only for them
            users = await self.settings["hub"].active_users(include_stopped=failed)
        except (HubAPIError, OSError) as e:
            app_log.error("Listing servers failed: %s", e)
            raise web.HTTPError(502, f"the hub did not list its servers: {e}")
        now = datetime.now(timezone.utc)
        self.sessions = session_deadlines(users)  # for an extension: each session's id
        extensions = await self.blocking(self.extensions)
        rows = [r for r in server_rows(users, templates, now, extensions) if wanted.matches(r, now)]
        foreign = [r["server"] for r in rows if not manager.may_manage(r) and r["server"] in wanted.server]
        if foreign:
            raise web.HTTPError(403, f"{manager.name} may not manage {', '.join(foreign)}: "
                                     "those servers were not started from templates of their courses")
        return [r for r in rows if manager.may_manage(r)]

    async def stop_all(self, rows: list[dict], concurrency: int) -> list[dict]:
        """Stop every server of ``rows``, at most ``concurrency`` requests at once; one result
        each, in order: ``stopped``, ``already gone`` or ``failed`` with a reason. Servers the
        hub is still stopping after its own wait are then watched together (one listing per
        check) until gone or ``stop_timeout``."""
        hub: HubClient = self.settings["hub"]
        gate = asyncio.Semaphore(concurrency)

        async def stop(row):
            async with gate:
                try:
                    return await hub.stop(row["user"], row["name"])
                except Exception as e:  # one server's surprise must not lose the others' results
                    app_log.error("Stopping %s failed", row["server"], exc_info=not isinstance(e, (HubAPIError, OSError)))
                    return "failed", str(e) or type(e).__name__

        outcomes = dict(zip((r["server"] for r in rows), await asyncio.gather(*(stop(r) for r in rows))))
        stopping = {server for server, (result, _) in outcomes.items() if result == "stopping"}
        timeout = self.settings["stop_timeout"]
        why = f"still stopping after {timeout:g} s (the hub goes on stopping it)"
        try:
            left = await hub.wait_gone(stopping, timeout) if stopping else set()
        except (HubAPIError, OSError) as e:
            left, why = stopping, f"the hub was stopping it, then did not list its servers: {e}"
        for server in stopping:
            outcomes[server] = ("failed", why) if server in left else ("stopped", "")
        results = [{"server": s, "result": result, "reason": reason} for s, (result, reason) in outcomes.items()]
        for r in results:
            app_log.info("fleet stop of %s by %s: %s %s", r["server"], self.current_user["name"], r["result"], r["reason"])
        return results


def _filter_or_400(values) -> ServerFilter:
    try:
        return parse_filter(values)
    except FilterError as e:
        raise web.HTTPError(400, str(e))


class ServersHandler(BaseHandler):
    async def get(self):
        manager = self.manager()
        wanted = _filter_or_400({k: self.get_arguments(k) for k in self.request.arguments})
        self.finish({"servers": await self.visible_rows(manager, wanted)})


class BulkHandler(BaseHandler):
    """``POST api/servers/ACTION``: one action on the servers a filter picks (see ``act``).

    Body fields: ``filter``, ``all`` (no filter needed), ``dry_run``, ``only`` (the servers
    the caller confirmed) and ``concurrency``, plus the action's own ``fields``."""

    action = ""
    fields: tuple = ()

    async def post(self):
        manager = self.manager()
        body = _json_body(self.request.body)
        known = ("filter", "all", "dry_run", "only", "concurrency", *self.fields)
        unknown = sorted(set(body) - set(known))
        if unknown:
            raise web.HTTPError(400, f"unknown field {unknown[0]!r}; {self.action} takes {', '.join(known)}")
        wanted = _filter_or_400(body.get("filter", {}))
        everything, dry_run = body.get("all", False), body.get("dry_run", False)
        if not isinstance(everything, bool) or not isinstance(dry_run, bool):
            raise web.HTTPError(400, "all and dry_run must be true or false")
        if wanted.empty and not everything:
            raise web.HTTPError(400, f'{self.action} needs a filter, or "all": true for every server you may manage')
        only = body.get("only")
        if only is not None and not (isinstance(only, list) and all(isinstance(s, str) for s in only)):
            raise web.HTTPError(400, 'only must be a list of servers ("user/name")')
        limit = self.settings["stop_concurrency"]
        concurrency = body.get("concurrency", limit)
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or not 1 <= concurrency <= limit:
            raise web.HTTPError(400, f"concurrency must be a whole number from 1 to {limit} (the service's "
                                     "stop_concurrency)")
        options = self.options(body)
        self.wanted = wanted
        rows = [r for r in await self.visible_rows(manager, wanted) if r["state"] != "failed"]  # nothing to act on
        gone = []
        if only is not None:
            rows = [r for r in rows if r["server"] in set(only)]
            gone = [{"server": s, "result": "already gone", "reason": "no longer running, or no longer one the filter "
                     "picks for you"} for s in sorted(set(only) - {r["server"] for r in rows})]
        results = await self.act(manager, rows, options, concurrency, dry_run) + ([] if dry_run else gone)
        if not dry_run:
            await self.blocking(self.settings["audit"].append, {
                "actor": manager.name, "action": self.action, "filter": wanted.given, "all": everything,
                "only": only, "servers": [r["server"] for r in rows], "results": results, **options,
            })
        counts = {}
        for r in results:
            counts[r["result"]] = counts.get(r["result"], 0) + 1
        self.finish({"dry_run": dry_run, "results": results, "counts": counts})

    def options(self, body: dict) -> dict:
        """The action's own fields of ``body``, checked (400 if not usable)."""
        return {}

    def need_file(self, setting: str, what: str, hub_side: str) -> None:
        """409 unless the service has its ``setting`` (a file the hub reads)."""
        if not self.settings[setting]:
            raise web.HTTPError(409, f"this hub has no {what}: the operator sets {hub_side} and gives the fleet "
                                     f"service the same path (--FleetApp.{setting})")

    async def act(self, manager, rows: list[dict], options: dict, concurrency: int, dry_run: bool) -> list[dict]:
        """One ``{"server", "result", "reason"}`` per row."""
        raise NotImplementedError


class StopHandler(BulkHandler):
    action = "stop"

    async def act(self, manager, rows, options, concurrency, dry_run):
        if dry_run:
            return [{"server": r["server"], "result": "would stop", "reason": ""} for r in rows]
        return await self.stop_all(rows, concurrency)


#: most minutes an extend adds or a notice lasts (a week); a template's maximum bounds an extension anyway
MAX_MINUTES = 7 * 24 * 60


class ExtendHandler(BulkHandler):
    """Add ``minutes`` to running servers' sessions, each within its template's maximum
    session length (``refused`` with the reason otherwise). A request naming one server
    (``filter: {"server": ["user/name"]}``) that is refused answers 409 with the reason."""

    action = "extend"
    fields = ("minutes",)

    def options(self, body):
        minutes = _minutes(body, "minutes", None)
        self.need_file("extension_file", "session extension file", "c.MultipleSpawner.extension_file")
        return {"minutes": minutes}

    async def act(self, manager, rows, options, concurrency, dry_run):
        results = []
        for row in rows:
            deadline, reason = plan_extension(row, options["minutes"])
            if deadline is None:
                results.append({"server": row["server"], "result": "refused", "reason": reason})
                continue
            until = datetime.fromtimestamp(deadline, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            if not dry_run:
                async with self.settings["file_lock"]:
                    await self.blocking(set_extension, self.settings["extension_file"], row["server"],
                                        self.sessions[row["server"]], deadline, manager.name)
                app_log.info("fleet extend of %s by %s: until %s", row["server"], manager.name, until)
            results.append({"server": row["server"], "result": "would extend" if dry_run else "extended",
                            "reason": f"until {until}"})
        one = len(self.wanted.server) == 1 and "/" in next(iter(self.wanted.server))
        if one and len(results) == 1 and results[0]["result"] == "refused":
            raise web.HTTPError(409, f"{results[0]['server']} cannot be extended: {results[0]['reason']}")
        return results


class NotifyHandler(BulkHandler):
    """Show ``message`` to the users of the servers a filter picks, on their hub pages, for
    ``expires_minutes`` (default a day): see :mod:`multiplespawner.notices`."""

    action = "notify"
    fields = ("message", "expires_minutes")

    def options(self, body):
        message = body.get("message")
        if not isinstance(message, str) or not message.strip() or len(message) > MAX_MESSAGE:
            raise web.HTTPError(400, f"message must be a text of 1 to {MAX_MESSAGE} characters")
        if any(ord(c) < 32 for c in message):
            raise web.HTTPError(400, "message must be one line of text (no control characters)")
        minutes = _minutes(body, "expires_minutes", 24 * 60)
        self.need_file("notice_file", "notice file", 'c.JupyterHub.template_vars = {"announcement": NoticeBoard(PATH)}')
        return {"message": message.strip(), "expires_minutes": minutes}

    async def act(self, manager, rows, options, concurrency, dry_run):
        servers = [r["server"] for r in rows]
        if servers and not dry_run:
            until = datetime.now(timezone.utc).timestamp() + 60 * options["expires_minutes"]
            async with self.settings["file_lock"]:
                await self.blocking(add_notice, self.settings["notice_file"], options["message"], servers,
                                    manager.name, until)
        result = "would notify" if dry_run else "notified"
        return [{"server": s, "result": result, "reason": ""} for s in servers]


_HOST = re.compile(r"[A-Za-z0-9._:\[\]-]{1,%d}" % MAX_HOST_LENGTH)  # whole string: fullmatch


class HostsHandler(BaseHandler):
    """``GET api/hosts``: the drained pool hosts, for every manager."""

    async def get(self):
        self.manager()
        self.finish({"drained": await self.blocking(self.drained)})

    def drained(self) -> dict:
        path = self.settings["drain_file"]
        if not path:
            raise web.HTTPError(409, "this hub has no drain file: the operator sets c.MachineOrchestrator.drain_file "
                                     "and gives the fleet service the same path (--FleetApp.drain_file)")
        try:
            return read_drained(path)
        except ValueError as e:
            raise web.HTTPError(409, str(e))


class DrainHandler(HostsHandler):
    """``POST api/hosts/drain`` / ``api/hosts/undrain`` body ``{"host": H, "stop": bool}``."""

    async def post(self, action):
        manager = self.manager()
        if not manager.everything:
            raise web.HTTPError(403, f"{manager.name} may not {action} pool hosts: a host serves every course, so "
                                     f"that needs admin:servers or the unfiltered {MANAGE_SCOPE}")
        body = _json_body(self.request.body)
        host, stop = body.get("host"), body.get("stop", False)
        if sorted(set(body) - {"host", "stop"}) or not isinstance(host, str) or not _HOST.fullmatch(host):
            raise web.HTTPError(400, 'the body must be {"host": "ADDRESS" or "ADDRESS:PORT", "stop": true|false}')
        if not isinstance(stop, bool) or (stop and action == "undrain"):
            raise web.HTTPError(400, "stop must be true or false, and only a drain stops servers")
        self.drained()  # 409 without a usable drain file, before anything changes
        async with self.settings["file_lock"]:
            drained = await self.blocking(set_drained, self.settings["drain_file"], host, manager.name,
                                          action == "drain")
        results = []
        if stop:
            rows = await self.visible_rows(manager, parse_filter({"host": [host]}))
            results = await self.stop_all(rows, self.settings["stop_concurrency"])
        await self.blocking(self.settings["audit"].append, {
            "actor": manager.name, "action": action, "host": host, "stop": stop,
            "servers": [r["server"] for r in results], "results": results})
        self.finish({"host": host, "drained": drained, "results": results})


class MachineBase(BaseHandler):
    """The hub's machines: for hub admins and unfiltered managers only (a machine may belong
    to any course)."""

    def operator(self, what: str) -> Manager:
        manager = self.manager()
        if not manager.everything:
            raise web.HTTPError(403, f"{manager.name} may not {what}: machines serve every course, so that needs "
                                     f"admin:servers or the unfiltered {MANAGE_SCOPE}")
        return manager

    async def from_hub(self, call, *args):
        try:
            return await call(*args)
        except (HubAPIError, OSError) as e:
            app_log.error("The hub's machine API failed: %s", e)
            raise web.HTTPError(502, f"the hub did not answer about its machines: {e} (is "
                                     "c.JupyterHub.extra_handlers = multiplespawner.hub_api.HANDLERS set, and "
                                     "custom:machines:manage in this service's role?)")



class MachinesHandler(MachineBase):
    """``GET api/machines``: the hub's provider machines and the server owning each."""

    async def get(self):
        self.operator("list machines")
        self.finish(await self.from_hub(self.settings["hub"].machines))


class ReapHandler(MachineBase):
    """``POST api/machines/reap`` body ``{"dry_run": bool}``: the hub destroys the machines
    no server owns (its own reaper), or only names them."""

    async def post(self):
        manager = self.operator("reap machines")
        body = _json_body(self.request.body)
        dry_run = body.get("dry_run", False)
        if set(body) - {"dry_run"} or not isinstance(dry_run, bool):
            raise web.HTTPError(400, 'the body must be {"dry_run": true|false}')
        done = await self.from_hub(self.settings["hub"].reap, dry_run)
        if not dry_run:
            await self.blocking(self.settings["audit"].append, {
                "actor": manager.name, "action": "reap", "reaped": done["reaped"], "problems": done["problems"]})
        self.finish(done)


class AuditHandler(BaseHandler):
    async def get(self):
        manager = self.manager()
        try:
            limit = int(self.get_argument("limit", "100"))
        except ValueError:
            raise web.HTTPError(400, "limit must be a whole number")
        if not 1 <= limit <= 10000:
            raise web.HTTPError(400, "limit must be from 1 to 10000")
        actor = None if manager.everything else manager.name
        self.finish({"audit": await self.blocking(self.settings["audit"].read, actor, limit)})


def _minutes(body: dict, key: str, default) -> float:
    """``body[key]``: a number of minutes above 0, at most a week (400 otherwise)."""
    minutes = body.get(key, default)
    if (not isinstance(minutes, (int, float)) or isinstance(minutes, bool) or minutes != minutes
            or not 0 < minutes <= MAX_MINUTES):
        raise web.HTTPError(400, f"{key} must be a number above 0 and at most {MAX_MINUTES}")
    return minutes


def _json_body(data: bytes) -> dict:
    if len(data) > MAX_BODY_BYTES:
        raise web.HTTPError(413, f"the body is {len(data)} bytes; at most {MAX_BODY_BYTES} are accepted")
    try:
        body = json.loads(data or b"{}")
    except (ValueError, RecursionError):
        raise web.HTTPError(400, "the body must be a JSON object")
    if not isinstance(body, dict):
        raise web.HTTPError(400, "the body must be a JSON object")
    return body


class FleetApp(ServiceApp):
    """Serve the fleet API (list and stop servers in bulk) as a JupyterHub service."""

    name = "multiplespawner-fleet"
    description = "List and stop JupyterHub servers in bulk by template, provider, group, host (a JupyterHub service)."
    default_url = "http://127.0.0.1:10102"
    default_prefix = "/services/fleet/"

    catalogue_paths = List(
        Unicode(),
        help="""The catalogue files or directories MultipleSpawner reads (its
        ``catalogue_paths``): the service reads template tags and resource types from them to
        decide which servers a course manager may see and stop. It never writes them.""",
    ).tag(config=True)

    audit_file = Unicode(
        help=f"""The JSON-lines file every bulk action is appended to (owner-only). Default:
        ``{AUDIT_FILE}`` in the first catalogue directory, beside the template editor's
        history.""",
    ).tag(config=True)

    @default("audit_file")
    def _audit_file_default(self):
        if not self.catalogue_paths:
            return ""
        first = Path(self.catalogue_paths[0])
        return str((first if first.is_dir() else first.parent) / AUDIT_FILE)

    hub_api_url = Unicode(help="The hub's REST API (default: $JUPYTERHUB_API_URL, set by the hub).").tag(config=True)

    @default("hub_api_url")
    def _hub_api_url_default(self):
        return os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api")

    stop_concurrency = Integer(
        8,
        min=1,
        help="""How many servers one bulk stop stops at once (a request may ask for fewer). The
        hub stops each one in its own event loop; this bounds the load one request puts on it.""",
    ).tag(config=True)

    stop_timeout = Float(
        60.0,
        help="""Seconds a bulk stop waits, after the hub's own wait (its slow_stop_timeout), for
        the servers the hub is still stopping; one still active then is reported ``failed``
        with that reason (the hub goes on stopping it).""",
    ).tag(config=True)

    drain_file = Unicode(
        "",
        help="""The hub's ``c.MachineOrchestrator.drain_file`` (same path): ``drain HOST`` and
        ``undrain HOST`` change it; the hub's pool reads it at every claim. Empty: the drain
        routes answer 409.""",
    ).tag(config=True)

    extension_file = Unicode(
        "",
        help="""The hub's ``c.MultipleSpawner.extension_file`` (same path): ``extend`` writes
        each server's new deadline there; the hub reads it when a session's deadline passes.
        Empty: ``extend`` answers 409.""",
    ).tag(config=True)

    notice_file = Unicode(
        "",
        help="""The file of the hub's ``NoticeBoard`` (``c.JupyterHub.template_vars =
        {"announcement": NoticeBoard(PATH)}``, same path): ``notify`` writes each notice there;
        the hub shows it on the users' pages. Empty: ``notify`` answers 409.""",
    ).tag(config=True)

    catalogue_check_interval = Float(
        2.0,
        help="At most how often (seconds) the catalogue files are checked for changes.",
    ).tag(config=True)

    aliases = {**ServiceApp.aliases, "catalogue-path": "FleetApp.catalogue_paths", "audit-file": "FleetApp.audit_file"}

    def make_app(self) -> web.Application:
        if not self.catalogue_paths:
            raise SystemExit("--catalogue-path is required (the catalogue MultipleSpawner reads)")
        token = os.environ.get("JUPYTERHUB_API_TOKEN")
        if not token:
            raise SystemExit("$JUPYTERHUB_API_TOKEN is not set: run the service from the hub (c.JupyterHub.services)")
        api = url_path_join(self.prefix, "api/")
        policy = CataloguePolicy(frozenset(self.allowed_spawner_classes), frozenset(self.allowed_configurer_classes))
        return web.Application(
            [
                (url_path_join(api, "servers"), ServersHandler),
                (url_path_join(api, "servers/stop"), StopHandler),
                (url_path_join(api, "servers/extend"), ExtendHandler),
                (url_path_join(api, "servers/notify"), NotifyHandler),
                (url_path_join(api, "audit"), AuditHandler),
                (url_path_join(api, "hosts"), HostsHandler),
                (url_path_join(api, "hosts/(drain|undrain)"), DrainHandler),
                (url_path_join(api, "machines"), MachinesHandler),
                (url_path_join(api, "machines/reap"), ReapHandler),
            ],
            catalogue=CatalogueSource(self.catalogue_paths, self.log, self.catalogue_check_interval, policy,
                                      locate_spawner_class),
            hub=HubClient(self.hub_api_url, token, connections=self.stop_concurrency + 2),
            audit=AuditLog(self.audit_file),
            executor=ThreadPoolExecutor(2, thread_name_prefix="fleet"),
            stop_concurrency=self.stop_concurrency,
            drain_file=self.drain_file,
            file_lock=asyncio.Lock(),
            extension_file=self.extension_file,
            notice_file=self.notice_file,
            stop_timeout=self.stop_timeout,
        )

    def start(self):
        """Serve until SIGTERM or SIGINT, then stop promptly."""
        self.serve(self.make_app(), 2 * MAX_BODY_BYTES, "Fleet service")


main = FleetApp.launch_instance
