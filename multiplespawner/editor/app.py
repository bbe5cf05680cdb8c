"""The template editor: a JupyterHub service with a web page and a JSON REST API.

Run by the hub as a managed service (see docs/template-editor.md)::

    c.JupyterHub.services = [{
        "name": "templates",
        "url": "http://127.0.0.1:10101",
        "command": [sys.executable, "-m", "multiplespawner.editor",
                    "--catalogue-dir=/etc/jupyterhub/templates"],
        "oauth_client_allowed_scopes": ["custom:templates:edit"],
    }]

Every request is authenticated by the hub (OAuth cookie for the page, ``Authorization:
token ...`` for scripts and the CLI). Only holders of ``custom:templates:edit`` (or its
``!group=`` form, see :mod:`.access`) get past the door; everybody else gets 403.

REST API, relative to the service prefix (JSON unless said otherwise)::

    GET    api/templates                 list: name, etag, file, editable, spec
    POST   api/templates                 create (body: template as JSON or YAML)
    GET    api/templates/NAME            one template (+ "yaml"); ETag header
    PUT    api/templates/NAME            replace; If-Match: <etag> required
    DELETE api/templates/NAME            remove;  If-Match: <etag> required
    POST   api/validate                  check a template without saving
    GET    api/history[?template=NAME]   who changed what, when, with diffs
    GET    api/preview?group=G           the spawn form (HTML) as a member of G sees it

Invalid templates get 400 with ``problems`` (file, path, problem), stale ETags 409,
forbidden changes 403; nothing is written in those cases.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import secrets
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import yaml
from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import httpserver, ioloop, web
from traitlets import Float, Integer, List, Unicode, default
from traitlets.config import Application

from ..catalogue import CatalogueError, load_catalogue
from ..form import render_form
from .access import EDIT_SCOPE, Editor, editor_from_scopes
from .store import Conflict, NotFound, TemplateStore, dump_yaml

HERE = Path(__file__).resolve().parent


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    """Hub-authenticated handler; store access runs in the app's bounded thread pool."""

    @property
    def store(self) -> TemplateStore:
        return self.settings["store"]

    async def blocking(self, func, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.settings["executor"], lambda: func(*args, **kwargs))

    def editor(self) -> Editor:
        """The current user as an editor, or 403 saying what permission is missing."""
        user = self.current_user
        editor = editor_from_scopes(user["name"], user.get("scopes"))
        if editor is None:
            raise web.HTTPError(
                403,
                f"{user['name']} may not edit templates: that needs the {EDIT_SCOPE} permission "
                "(ask the hub's administrators to grant it to you or your course's group).",
            )
        return editor

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        body = {"status": status_code, "message": message}
        body.update(getattr(exc, "extra", {}))
        if self.request.path.startswith(self.settings["api_prefix"]):
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(body))
        else:
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.finish(self.render_string("error.html", status=status_code, message=message))

    def body_template(self) -> dict:
        """The request body as a template: JSON, or YAML for application/yaml and text/yaml."""
        kind = self.request.headers.get("Content-Type", "application/json").split(";")[0].strip()
        text = self.request.body.decode("utf-8", "replace")
        try:
            value = yaml.safe_load(text) if kind in ("application/yaml", "text/yaml", "application/x-yaml") else json.loads(text)
        except (ValueError, yaml.YAMLError) as e:
            raise _bad(f"the body is not valid {'YAML' if 'yaml' in kind else 'JSON'}: {e}")
        if isinstance(value, list) and len(value) == 1:
            value = value[0]  # a thesis-format file holding one template
        if not isinstance(value, dict):
            raise _bad("the body must be one template (a mapping)")
        return value

    def problems_of(self, e: CatalogueError) -> list[str]:
        """``e``'s problems as text, catalogue files named relative to the catalogue directory
        (course admins need to know which file, not where the server keeps it)."""
        texts = []
        for p in e.problems:
            try:
                p = dataclasses.replace(p, file=str(Path(p.file).relative_to(self.store.directory)))
            except ValueError:
                pass  # a file outside the directory (an --extra-path): named as configured
            texts.append(str(p))
        return texts

    def invalid(self, e: CatalogueError) -> web.HTTPError:
        """The 400 for a template that does not validate."""
        return _bad("the template is not valid; nothing was saved", self.problems_of(e))

    def entry_json(self, entry, editor: Editor) -> dict:
        return {
            "name": entry.name,
            "etag": entry.etag,
            "file": entry.file.name,
            "editable": editor.may_edit(entry.spec),
            "spec": entry.spec,
        }


def _bad(message: str, problems: list[str] = ()) -> web.HTTPError:
    err = web.HTTPError(400, message)
    err.extra = {"problems": list(problems)}
    return err


def _conflict(e: Conflict) -> web.HTTPError:
    err = web.HTTPError(409, str(e))
    err.extra = {"current_etag": e.current_etag}
    return err


class PageHandler(BaseHandler):
    @web.authenticated
    def get(self):
        editor = self.editor()
        self.render(
            "editor.html",
            prefix=self.settings["prefix"],
            hub_prefix=self.settings["hub_prefix"],
            editor=editor,
            xsrf=self.xsrf_token.decode() if isinstance(self.xsrf_token, bytes) else self.xsrf_token,
        )


class TemplatesHandler(BaseHandler):
    @web.authenticated
    async def get(self):
        editor = self.editor()
        entries = await self.blocking(self.store.list)
        self.finish({"templates": [self.entry_json(e, editor) for e in entries]})

    @web.authenticated
    async def post(self):
        editor = self.editor()
        spec = self.body_template()
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise _bad("the template needs a name")
        refusal = editor.refusal(None, spec)
        if refusal:
            raise web.HTTPError(403, refusal)
        try:
            entry = await self.blocking(self.store.put, name, spec, None, editor.name)
        except CatalogueError as e:
            raise self.invalid(e)
        except Conflict as e:
            raise _conflict(e)
        self.set_status(201)
        self.set_header("ETag", f'"{entry.etag}"')
        self.finish(self.entry_json(entry, editor))


class TemplateHandler(BaseHandler):
    def if_match(self) -> str:
        value = self.request.headers.get("If-Match", "").strip().strip('"')
        if not value:
            raise web.HTTPError(428, "send If-Match with the etag of the version you edited")
        return value

    async def current(self, name):
        try:
            return await self.blocking(self.store.get, name)
        except NotFound:
            raise web.HTTPError(404, f"no template named {name!r}")

    @web.authenticated
    async def get(self, name):
        editor = self.editor()
        entry = await self.current(name)
        self.set_header("ETag", f'"{entry.etag}"')
        self.finish({**self.entry_json(entry, editor), "yaml": dump_yaml(entry.spec)})

    @web.authenticated
    async def put(self, name):
        editor = self.editor()
        etag = self.if_match()
        spec = self.body_template()
        before = await self.current(name)
        refusal = editor.refusal(before.spec, spec)
        if refusal:
            raise web.HTTPError(403, refusal)
        try:
            entry = await self.blocking(self.store.put, name, spec, etag, editor.name)
        except CatalogueError as e:
            raise self.invalid(e)
        except Conflict as e:
            raise _conflict(e)
        self.set_header("ETag", f'"{entry.etag}"')
        self.finish(self.entry_json(entry, editor))

    @web.authenticated
    async def delete(self, name):
        editor = self.editor()
        etag = self.if_match()
        before = await self.current(name)
        refusal = editor.refusal(before.spec, None)
        if refusal:
            raise web.HTTPError(403, refusal)
        try:
            await self.blocking(self.store.delete, name, etag, editor.name)
        except CatalogueError as e:
            raise self.invalid(e)
        except Conflict as e:
            raise _conflict(e)
        self.set_status(204)
        self.finish()


class ValidateHandler(BaseHandler):
    @web.authenticated
    async def post(self):
        self.editor()
        spec = self.body_template()
        name = spec.get("name")
        problems = []
        try:
            await self.blocking(self.store.validate, {name: spec})
        except CatalogueError as e:
            problems = self.problems_of(e)
        self.finish({"valid": not problems, "problems": problems, "yaml": dump_yaml(spec)})


class HistoryHandler(BaseHandler):
    @web.authenticated
    async def get(self):
        self.editor()
        name = self.get_argument("template", None)
        records = await self.blocking(self.store.history, name)
        self.finish({"history": records})


class PreviewHandler(BaseHandler):
    @web.authenticated
    async def get(self):
        self.editor()
        group = self.get_argument("group", "").strip()
        try:
            catalogue = await self.blocking(load_catalogue, self.settings["catalogue_paths"])
        except CatalogueError as e:
            raise self.invalid(e)
        templates = catalogue.usable_by(user_name="", groups=[group] if group else [], admin=False)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(render_form(templates))


class TemplateEditorApp(Application):
    """Serve the template editor as a JupyterHub service."""

    name = "multiplespawner-template-editor"
    description = "Edit MultipleSpawner templates in the browser (a JupyterHub service)."

    catalogue_dir = Unicode(
        "",
        help="""The catalogue directory MultipleSpawner reads (one of its catalogue_paths).
        Templates are changed in the files there; new ones go to <dir>/<name>.yaml.""",
    ).tag(config=True)

    extra_paths = List(
        Unicode(),
        help="""Further catalogue files or directories the spawner reads (e.g. deployments kept
        elsewhere). They take part in validation but are never written.""",
    ).tag(config=True)

    ip = Unicode(help="Address to listen on (default: from $JUPYTERHUB_SERVICE_URL, else 127.0.0.1).").tag(config=True)

    @default("ip")
    def _ip_default(self):
        return urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101")).hostname

    port = Integer(help="Port to listen on (default: from $JUPYTERHUB_SERVICE_URL, else 10101).").tag(config=True)

    @default("port")
    def _port_default(self):
        return urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101")).port or 10101

    prefix = Unicode(help="URL prefix (default: $JUPYTERHUB_SERVICE_PREFIX, else /services/templates/).").tag(config=True)

    @default("prefix")
    def _prefix_default(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/templates/")

    threads = Integer(4, help="Threads for catalogue file reads and writes.").tag(config=True)

    shutdown_timeout = Float(
        2.0,
        help="""Seconds the open connections get to close after SIGTERM or SIGINT (requests in
        flight are cut off after that); then the service exits. The hub waits for its managed
        services when it stops, so this bounds how long a hub restart waits for the editor.""",
    ).tag(config=True)

    aliases = {
        "catalogue-dir": "TemplateEditorApp.catalogue_dir",
        "extra-path": "TemplateEditorApp.extra_paths",
        "ip": "TemplateEditorApp.ip",
        "port": "TemplateEditorApp.port",
    }

    def make_app(self) -> web.Application:
        if not self.catalogue_dir:
            raise SystemExit("--catalogue-dir is required")
        prefix = self.prefix
        api = url_path_join(prefix, "api/")
        store = TemplateStore(self.catalogue_dir, self.extra_paths)
        hub_prefix = os.environ.get("JUPYTERHUB_BASE_URL", "/") + "hub/"
        return web.Application(
            [
                (prefix, PageHandler),
                (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
                (url_path_join(api, "templates"), TemplatesHandler),
                (url_path_join(api, "templates/([^/]+)"), TemplateHandler),
                (url_path_join(api, "validate"), ValidateHandler),
                (url_path_join(api, "history"), HistoryHandler),
                (url_path_join(api, "preview"), PreviewHandler),
            ],
            cookie_secret=secrets.token_bytes(32),
            template_path=str(HERE / "templates"),
            static_path=str(HERE / "static"),
            static_url_prefix=url_path_join(prefix, "static/"),
            store=store,
            catalogue_paths=[self.catalogue_dir, *self.extra_paths],
            executor=ThreadPoolExecutor(self.threads, thread_name_prefix="template-editor"),
            prefix=prefix,
            api_prefix=api,
            hub_prefix=hub_prefix,
        )

    def start(self):
        """Serve until SIGTERM or SIGINT, then stop promptly (see :meth:`_stop`)."""
        app = self.make_app()
        server = httpserver.HTTPServer(app, xheaders=True)
        server.listen(self.port, self.ip)
        self.log.info("Template editor for %s on http://%s:%s%s", self.catalogue_dir, self.ip, self.port, self.prefix)
        loop = ioloop.IOLoop.current()
        for signum in (signal.SIGTERM, signal.SIGINT):
            # installed explicitly: a service started by a hub that was itself started in the
            # background inherits SIGINT *ignored*, and the hub's first signal is SIGINT
            loop.asyncio_loop.add_signal_handler(
                signum, lambda signum=signum: asyncio.ensure_future(self._stop(signum, server, app, loop))
            )
        loop.start()
        # Stopped: what is left is the interpreter's exit, whose final garbage collection of
        # this large heap took seconds on a busy host. The memory goes with the process.
        gc.freeze()

    async def _stop(self, signum: int, server: httpserver.HTTPServer, app: web.Application, loop) -> None:
        """Stop listening, close the open connections (idle keep-alive ones at once; waits at
        most ``shutdown_timeout``), let the file threads finish what they hold, end the loop."""
        self.log.info("Received %s, stopping", signal.Signals(signum).name)
        server.stop()
        try:
            await asyncio.wait_for(server.close_all_connections(), self.shutdown_timeout)
        except asyncio.TimeoutError:
            self.log.warning("Requests still open after %ss are cut off", self.shutdown_timeout)
        app.settings["executor"].shutdown(wait=False, cancel_futures=True)
        loop.stop()


main = TemplateEditorApp.launch_instance
