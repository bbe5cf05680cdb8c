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
forbidden changes 403 with one problem per refused field naming the permission it needs (see
:mod:`.access`), bodies over ``max_body_bytes`` 413; nothing is written in those cases. Bodies
are parsed with :func:`~multiplespawner.catalogue.parse_document` (size, depth, no YAML
aliases), and every refusal is a 4xx with a message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import web
from traitlets import Dict, Float, Integer, List, Unicode, validate

from ..catalogue import (
    DEFAULT_MAX_BYTES,
    CatalogueError,
    CataloguePolicy,
    is_identifier,
    load_catalogue,
    parse_document,
)
from ..classes import locate_spawner_class
from ..form import render_form
from ..service import ServiceApp
from .access import EDIT_SCOPE, CourseRules, Editor, editor_from_scopes
from .store import Conflict, Forbidden, NotFound, TemplateStore, dump_yaml

_YAML_TYPES = ("application/yaml", "text/yaml", "application/x-yaml")

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
        """The request body as a template: JSON, or YAML for application/yaml and text/yaml.

        Bounded (see :func:`~multiplespawner.catalogue.parse_document`): 413 over
        ``max_body_bytes``, 400 for anything that is not one template-shaped mapping whose
        ``name`` is a valid template name.
        """
        policy: CataloguePolicy = self.settings["policy"]
        if len(self.request.body) > policy.max_bytes:
            raise web.HTTPError(413, f"the body is {len(self.request.body)} bytes; at most {policy.max_bytes} "
                                     "are accepted (the editor's max_body_bytes)")
        kind = self.request.headers.get("Content-Type", "application/json").split(";")[0].strip()
        syntax = "yaml" if kind in _YAML_TYPES else "json"
        try:
            value = parse_document(self.request.body, "request body", policy, syntax)
        except CatalogueError as e:
            raise _bad("the body is " + "; ".join(p.message for p in e.problems))
        if isinstance(value, list) and len(value) == 1:
            value = value[0]  # a thesis-format file holding one template
        if not isinstance(value, dict):
            raise _bad("the body must be one template (a mapping)")
        if not is_identifier(value.get("name")):
            raise _bad("the template needs a name: letters, digits, '.', '_' or '-', at most 63 characters, "
                       "starting with a letter or digit")
        return value

    def refuse(self, editor: Editor, before: dict | None, after: dict | None, existing=()) -> None:
        """403 listing every field ``editor`` may not change from ``before`` to ``after``
        (``existing``: the catalogue's templates, for a creation)."""
        reasons = editor.refusals(before, after, self.settings["course_rules"], existing)
        if reasons:
            raise _forbidden(Forbidden(reasons))

    def authorize(self, editor: Editor):
        """The check the store repeats under its lock, with the template as it is then."""
        rules = self.settings["course_rules"]
        return lambda before, after, existing: editor.refusals(before, after, rules, existing)

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


def _forbidden(e: Forbidden) -> web.HTTPError:
    err = web.HTTPError(403, "; ".join(e.reasons) + " (nothing was saved)")
    err.extra = {"problems": e.reasons}
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
        if not editor.everything:
            self.refuse(editor, None, spec, [e.spec for e in await self.blocking(self.store.list)])
        try:
            entry = await self.blocking(self.store.put, spec["name"], spec, None, editor.name, self.authorize(editor))
        except CatalogueError as e:
            raise self.invalid(e)
        except Forbidden as e:
            raise _forbidden(e)
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
        self.refuse(editor, before.spec, spec)
        try:
            entry = await self.blocking(self.store.put, name, spec, etag, editor.name, self.authorize(editor))
        except CatalogueError as e:
            raise self.invalid(e)
        except Forbidden as e:
            raise _forbidden(e)
        except Conflict as e:
            raise _conflict(e)
        self.set_header("ETag", f'"{entry.etag}"')
        self.finish(self.entry_json(entry, editor))

    @web.authenticated
    async def delete(self, name):
        editor = self.editor()
        etag = self.if_match()
        before = await self.current(name)
        self.refuse(editor, before.spec, None)
        try:
            await self.blocking(self.store.delete, name, etag, editor.name, self.authorize(editor))
        except CatalogueError as e:
            raise self.invalid(e)
        except Forbidden as e:
            raise _forbidden(e)
        except Conflict as e:
            raise _conflict(e)
        self.set_status(204)
        self.finish()


class ValidateHandler(BaseHandler):
    @web.authenticated
    async def post(self):
        self.editor()
        spec = self.body_template()
        problems = []
        try:
            await self.blocking(self.store.validate, {spec["name"]: spec})
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
            catalogue = await self.blocking(
                load_catalogue, self.settings["catalogue_paths"], self.settings["policy"], locate_spawner_class
            )
        except CatalogueError as e:
            raise self.invalid(e)
        templates = catalogue.usable_by(user_name="", groups=[group] if group else [], admin=False)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(render_form(templates))


class TemplateEditorApp(ServiceApp):
    """Serve the template editor as a JupyterHub service."""

    default_url = "http://127.0.0.1:10101"
    default_prefix = "/services/templates/"

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

    threads = Integer(4, help="Threads for catalogue file reads and writes.").tag(config=True)

    max_body_bytes = Integer(
        DEFAULT_MAX_BYTES,
        help="""Largest request body (a template) and catalogue file the editor reads, in bytes.
        Larger bodies get 413, larger files a catalogue problem.""",
    ).tag(config=True)

    @validate("max_body_bytes")
    def _positive(self, proposal):
        if proposal["value"] < 1024:
            raise ValueError("max_body_bytes must be at least 1024")
        return proposal["value"]

    course_editor_max_resources = Dict(
        {"cpu": 4, "memory_mb": 4096, "gpus": 0},
        help="""The largest resource bounds (default, min and max) a course editor (a holder of
        ``custom:templates:edit!group=...`` only) may set, by resource: ``cpu`` (cores),
        ``memory_mb`` (MiB), ``gpus``. A resource not listed cannot be set by course editors.""",
    ).tag(config=True)

    course_editor_max_lifetime_minutes = Float(
        720,
        help="The longest session lifetime (default, min and max, in minutes) a course editor may set.",
    ).tag(config=True)

    course_editor_images = List(
        Unicode(),
        help="""Images a course editor may put in a template's ``spawner.kwargs.image``
        (container templates). Empty: course editors cannot change images.""",
    ).tag(config=True)

    course_editor_environment_pattern = Unicode(
        r"COURSE_[A-Z0-9_]+",
        help="""Regular expression (matched against the whole name) for the environment variables
        a course editor may add, change or remove in a template's ``environment``.""",
    ).tag(config=True)

    @validate("course_editor_environment_pattern")
    def _regex(self, proposal):
        re.compile(proposal["value"])  # a bad pattern stops the service at start, not a request
        return proposal["value"]

    aliases = {**ServiceApp.aliases, "catalogue-dir": "TemplateEditorApp.catalogue_dir",
               "extra-path": "TemplateEditorApp.extra_paths"}

    def make_app(self) -> web.Application:
        if not self.catalogue_dir:
            raise SystemExit("--catalogue-dir is required")
        prefix = self.prefix
        api = url_path_join(prefix, "api/")
        policy = CataloguePolicy(frozenset(self.allowed_spawner_classes),
                                 frozenset(self.allowed_configurer_classes), self.max_body_bytes)
        store = TemplateStore(self.catalogue_dir, self.extra_paths, policy)
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
            policy=policy,
            course_rules=CourseRules(dict(self.course_editor_max_resources), self.course_editor_max_lifetime_minutes,
                                     tuple(self.course_editor_images), self.course_editor_environment_pattern),
            catalogue_paths=[self.catalogue_dir, *self.extra_paths],
            executor=ThreadPoolExecutor(self.threads, thread_name_prefix="template-editor"),
            prefix=prefix,
            api_prefix=api,
            hub_prefix=hub_prefix,
        )

    def start(self):
        """Serve until SIGTERM or SIGINT, then stop promptly."""
        # bodies up to twice the limit reach the handler and get a 413 with a message; larger
        # ones are cut off by tornado with a bare 400
        self.serve(self.make_app(), 2 * self.max_body_bytes, f"Template editor for {self.catalogue_dir}")


main = TemplateEditorApp.launch_instance
