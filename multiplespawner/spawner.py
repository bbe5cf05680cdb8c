"""MultipleSpawner: spawn on the resource a user picks from the template catalogue.

The life of one server:

1. The spawn form (or REST ``user_options``) names a template, provider, resources and a
   session length. :meth:`MultipleSpawner.prepare` (run first in ``run_pre_spawn_hook``, i.e.
   before the operator's ``pre_spawn_hook`` and before anything is started) checks them against
   the current catalogue and refuses bad ones with a 400. It then builds the child spawner
   from the template: config < ``group_overrides`` < the template's ``spawner.kwargs`` < the
   chosen resources. The child's ``start_timeout``/``http_timeout`` are the ones that count.
   Then the template's quota admits the spawn, refuses it (429) or lets it wait in line
   (admission.py), still before ``pre_spawn_hook``.
2. :meth:`start` hands the environment (including what ``pre_spawn_hook`` added) to the child
   and starts it within the child's ``start_timeout``; a failure or timeout becomes a
   ``SpawnException`` naming the step and the reason. A container template's ``mounts`` are
   mounted on the hub host first and bound into the container (docs/mounts.md); they are
   unmounted when a later step fails and on stop. The session deadline is set when the
   child is up.
3. ``poll``/``stop``/``progress``/``delete_forever`` are forwarded to the child. ``poll`` and a
   timer stop the server when its session runs out.
4. State (JSON) records the template and catalogue version, the child's class and resolved
   keyword arguments, the child's own state and the deadline: enough to rebuild the very same
   child after a hub restart even if the catalogue changed since.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

from jupyterhub.spawner import Spawner
from jupyterhub.utils import maybe_future, recursive_update
from traitlets import Bool, Float, Integer, List, TraitError, Unicode, default, observe

from cloudsshspawner.progress import ProgressEvents

from .catalogue import (
    DEFAULT_CONFIGURER_CLASSES,
    DEFAULT_MAX_BYTES,
    DEFAULT_SPAWNER_CLASSES,
    CatalogueError,
    CataloguePolicy,
    CatalogueSource,
    default_catalogue_path,
    resolve_placeholders,
    shared_source,
)
from .admission import Place, admission_for, lost_place_notice
from .children import CpuWeight, adapter_for
from .children.local_orphans import sweep_once as sweep_orphaned_processes_once
from .choices import Choice, resolve_choice
from .classes import TemplateError, spawner_class_for
from .errors import SpawnException, failed, refused, user_facing
from .extensions import extended_deadline, read_extensions
from .json_file import utc_timestamp
from .form import options_from_form as form_fields_to_options
from .form import default_form_template, render_form
from .machines import MACHINE_RESOURCE_TYPES, POOL, MachineOrchestrator, lease_for, lease_from_record, lease_record, reap_once
from .metrics import NO_TEMPLATE, counts_failures, observe_phase
from .mounts.server import MountFailed, PlanError, mount_all, mounts_from_state, mounts_to_state, plan, unmount_all
from .prerequisites import Prerequisites

_PREREQUISITES = Prerequisites()

#: Seconds the hub's own ``start_timeout`` for a server exceeds the child's. MultipleSpawner
#: enforces the child's limit itself (its error names the step and the limit; the hub's says
#: nothing), so the hub's limit is only a backstop that must not fire first.
HUB_TIMEOUT_MARGIN = 10.0

#: Attributes the hub gives a spawner at construction that the child needs too.
_PLUMBING = (
    "user",
    "orm_spawner",
    "hub",
    "authenticator",
    "proxy_spec",
    "oauth_client_id",
    "cookie_options",
    "cookie_host_prefix_enabled",
    "trusted_alt_names",
    "public_url",
    "public_hub_url",
    "internal_ssl",
    "internal_trust_bundles",
    "internal_certs_location",
    "admin_access",
    "api_token",
)


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class MultipleSpawner(Spawner):
    """Spawn on the resource a user picks from the template catalogue.

    Configure the catalogue with :attr:`catalogue_paths`; see docs/catalogue.md for the format.
    """

    #: a template cannot name this class as its child (see :func:`.classes.spawner_class_for`)
    builds_children_from_templates = True

    catalogue_paths = List(
        Unicode(),
        help="""Catalogue files or directories (JSON or YAML) listing deployments and templates.

        Directories contribute their *.json, *.yaml and *.yml files in name order. Edits take
        effect on the next form or spawn without restarting the hub; a broken edit keeps the
        last good catalogue in force and is shown to admins on the spawn form. Empty: the
        catalogue shipped with the package (a local-process template, and a container template
        shown when the Docker engine answers and has the notebook image).
        """,
    ).tag(config=True)

    catalogue_check_interval = Float(
        1.0,
        help="""At most how often (seconds) the catalogue files' modification times are checked.

        Checks and reloads run in a worker thread, and concurrent requests share one check.
        """,
    ).tag(config=True)

    options_form_template = Unicode(
        help="""The spawn form as a Jinja template (autoescaped), like KubeSpawner's
        profile_form_template. It gets ``admin_error``, ``templates`` (each with name,
        display_name, description, resource_type, resource_type_label, providers, checked,
        reason and fields: key, label, step, min, max, value), ``providers`` and
        ``resource_types`` (value, text, selected), and must post ``template``, ``provider`` and
        ``<template>.<key>`` fields. Default: the packaged multiplespawner/templates/spawn_form.html;
        start from a copy of it.
        """,
    ).tag(config=True)

    @default("options_form_template")
    def _options_form_template_default(self):
        return default_form_template()

    allowed_spawner_classes = List(
        Unicode(),
        list(DEFAULT_SPAWNER_CLASSES),
        help="""Spawner classes templates may name, exactly as written in ``spawner.class``
        (dotted paths or ``jupyterhub.spawners`` entry-point names). The catalogue refuses a
        template naming any other class before importing it, whoever wrote the file. The
        default lists the classes the suite supports; ``SimpleLocalProcessSpawner`` is absent
        on purpose (it runs notebooks as the hub's Unix user). Give the template editor
        service the same list.
        """,
    ).tag(config=True)

    allowed_configurer_classes = List(
        Unicode(),
        list(DEFAULT_CONFIGURER_CLASSES),
        help="""Configurer classes templates may name in ``configurer.class`` (short names such
        as ``ansible`` or dotted paths); the catalogue refuses others before importing them.""",
    ).tag(config=True)

    catalogue_max_bytes = Integer(
        DEFAULT_MAX_BYTES,
        help="Largest catalogue file read, in bytes; a larger file is a catalogue error.",
    ).tag(config=True)

    lifetime_grace = Float(
        2.0,
        help="""Seconds added to the session deadline before the expiry timer stops a server.

        ``poll`` stops expired servers too, so the hub's regular polling is the safety net.
        """,
    ).tag(config=True)

    extension_file = Unicode(
        "",
        help="""The session extension file the fleet service writes (its
        ``--FleetApp.extension_file``, same path): when a session's deadline has passed, the
        expiry check reads it (in a worker thread) and a session extended there (``multiplespawner-servers
        extend``) runs on until its new deadline. Empty: sessions end at the deadline set at
        start. Unreadable: logged, and the session ends at its own deadline. See docs/fleet.md.""",
    ).tag(config=True)

    child_nice = Integer(
        19,
        min=0,
        max=19,
        help="""Nice value of local-process notebooks (LocalProcessSpawner children); 0: the hub's.

        The notebook process and its session's scheduling group (autogroup) start at this nice
        value and keep it, so on a machine the hub shares with its notebooks the hub gets the
        CPU first while a whole class starts at once, and notebooks still use every cycle the hub
        does not need (a weight, not a limit; notebooks weigh the same among themselves).
        See docs/scale.md.
        """,
    ).tag(config=True)

    child_cpu_shares = Integer(
        128,
        min=0,
        help="""Docker ``cpu_shares`` of container notebooks (DockerSpawner children) whose
        template sets none; 0: Docker's default (1024).

        A relative CPU weight, not a limit: it gives the hub and other services on the Docker
        host the CPU first when containers compete with them (it matters when containers and
        the hub are siblings in the host's cgroup tree, as under systemd). See docs/scale.md.
        """,
    ).tag(config=True)

    stop_orphaned_processes = Bool(
        True,
        help="""Stop local-process notebooks (LocalProcessSpawner children) of this hub that no
        server owns: once when the hub starts, for servers whose stored state names no running
        process, and before a local server starts, for that server.

        Such a process is left when the hub dies after starting the notebook and before
        storing its PID. Processes are recognised by their environment (the hub's API URL in
        MULTIPLESPAWNER_LOCAL_HUB, JUPYTERHUB_USER, JUPYTERHUB_SERVER_NAME), which whatever
        the notebook starts inherits: processes a notebook detached (``nohup``, ``setsid``)
        are stopped with it too. Each stop is logged. See docs/reliability.md.
        """,
    ).tag(config=True)

    mounts_runtime_dir = Unicode(
        "/run/jupyterhub-multiplespawner/mounts",
        help="""Where the storage mounts of a template's ``mounts`` are made on the hub host: one
        root-owned 0700 directory per server (named by a hash of user and server name), each
        mount at ``<that directory>/<index>``. Made when needed; the hub runs as root to mount.
        See docs/mounts.md.""",
    ).tag(config=True)

    mount_timeout = Float(
        30.0,
        help="""Seconds one storage mount may take (from its ssh-agent's start to the file system
        answering) before it counts as failed.""",
    ).tag(config=True)

    container_home = Unicode(
        "/home/jovyan",
        help="""The notebook user's home inside container notebooks (DockerSpawner children):
        a template's ``mounts`` appear at ``<container_home>/<target>``. The default is the home
        of the Jupyter Docker Stacks' user and of the suite's notebook image.""",
    ).tag(config=True)

    container_uid = Integer(
        1000,
        min=0,
        help="""The uid that storage mounts of container notebooks show as their files' owner:
        the container user's (the Jupyter Docker Stacks' and the suite's notebook image's
        jovyan is 1000). Mounts allow other users, and the kernel checks the files' modes
        against this owner.""",
    ).tag(config=True)

    container_gid = Integer(
        100,
        min=0,
        help="""The gid that storage mounts of container notebooks show as their files' group
        (the Jupyter Docker Stacks' ``users`` group is 100).""",
    ).tag(config=True)

    # ---- state kept in memory (persisted through get_state/load_state) ----------------
    child = None  # the child Spawner of the current server, if any
    machine = None  # the MachineLease of a bare_metal/virtual_machine server (see machines.py)
    choice: Choice | None = None
    _record: dict | None = None  # what the current server was built from (JSON)
    _last_child: dict | None = None  # class + kwargs of the last server, for delete_forever
    _deadline: float | None = None  # set at start: the session's own deadline (and its id in extension_file)
    _extended_until: float | None = None  # a later deadline read from extension_file
    _last_failure: dict | None = None  # {"time", "message"} of the last start, if it failed
    _expiry_handle: asyncio.TimerHandle | None = None
    _waiting: dict | None = None  # the spawn waits in line: template and since when (see _in_line)
    _notice: str | None = None  # for the user's next spawn form (a place in line lost to a restart)
    quota_place: Place | None = None  # the quota place this server holds (see admission.py)
    _mount_input: tuple | None = None  # (the template's mounts, placeholder values) for _start
    _mounts: list | None = None  # the storage mounts made for this server (mounts.server.Made)
    _mounts_dir: Path | None = None  # their per-server directory on the hub host

    def __init__(self, **kwargs):
        self._events = ProgressEvents()
        super().__init__(**kwargs)
        if self.stop_orphaned_processes:
            sweep_orphaned_processes_once(self)  # the first instance: while the hub loads its servers

    # ---- catalogue ---------------------------------------------------------------------
    @property
    def catalogue_source(self) -> CatalogueSource:
        paths = self.catalogue_paths or [str(default_catalogue_path())]
        policy = CataloguePolicy(frozenset(self.allowed_spawner_classes),
                                 frozenset(self.allowed_configurer_classes), self.catalogue_max_bytes)
        return shared_source(paths, self.log, self.catalogue_check_interval, policy)

    def _user_identity(self) -> dict:
        return {
            "user_name": self.user.name,
            "groups": [g.name for g in self.user.groups],
            "admin": bool(self.user.admin),
        }

    async def _unavailable(self, catalogue, templates) -> dict[str, str]:
        """Template name -> reason, for templates whose prerequisites are missing now."""
        reasons = {}
        for t in templates:
            if t.requires:
                deployment = catalogue.deployment(t, t.providers[0])
                reason = await _PREREQUISITES.unmet(t, deployment)
                if reason:
                    reasons[t.name] = reason
        return reasons

    async def resolve(self, user_options: dict | None) -> Choice:
        """Check ``user_options`` for this user against the current catalogue (400 if bad)."""
        try:
            catalogue = await self.catalogue_source.get()
        except CatalogueError as e:
            self.log.error("No usable template catalogue for %s:\n%s", self._log_name, e)
            raise failed(
                "The template catalogue cannot be read; the hub's administrators have been told.",
                "catalogue_error",
            ) from e
        identity = self._user_identity()
        usable = catalogue.usable_by(**identity)
        unavailable = await self._unavailable(catalogue, usable)
        return resolve_choice(catalogue, user_options, unavailable=unavailable, **identity)

    # ---- form --------------------------------------------------------------------------
    @default("options_form")
    def _options_form_default(self):
        return MultipleSpawner.render_options_form

    async def render_options_form(self) -> str:
        """The spawn form for this user, preselecting this server's last choice."""
        source = self.catalogue_source
        identity = self._user_identity()
        try:
            catalogue = await source.get()
        except Exception as e:  # no good catalogue at all: admins see why, users a notice
            self.log.error("No usable template catalogue for %s: %s", self._log_name, e)
            return render_form([], admin_error=str(e) if identity["admin"] else None,
                               template_text=self.options_form_template)
        usable = catalogue.usable_by(**identity)
        unavailable = await self._unavailable(catalogue, usable)
        error = str(source.error) if source.error and identity["admin"] else None
        return render_form(usable, last=self.user_options, unavailable=unavailable, admin_error=error,
                           template_text=self.options_form_template, notice=self._notice)

    @default("options_from_form")
    def _options_from_form_default(self):
        # the hub passes the spawner to hooks that take a ``spawner`` argument
        return lambda formdata, spawner: spawner.checked_options_from_form(formdata)

    async def checked_options_from_form(self, formdata: dict) -> dict:
        """Form fields -> canonical ``user_options``; a bad choice re-shows the form with a 400."""
        return (await self.resolve(form_fields_to_options(formdata))).to_options()

    async def options_from_query(self, query_data: dict) -> dict:
        """``/hub/spawn?template=...&<template>.cpu=...``: the form's fields, the form's check.

        JupyterHub's default calls ``options_from_form`` without the ``spawner`` argument ours
        takes; ``run_options_from_form`` passes it when the callable wants it.
        """
        return await maybe_future(self.run_options_from_form(query_data))

    # ---- preparing the child -----------------------------------------------------------
    @default("apply_user_options")
    def _apply_user_options_default(self):
        # user_options are checked and applied by prepare(), from run_pre_spawn_hook
        return lambda spawner, user_options: None

    @counts_failures
    async def run_pre_spawn_hook(self):
        """Check the choice and build the child (:meth:`prepare`), then run ``pre_spawn_hook``.

        The hub calls this after ``apply_user_options`` and before ``start``; an invalid
        choice therefore stops the spawn before the operator's hook (e.g. an LDAP account
        being created) or anything else runs.
        """
        try:
            await self.prepare(self.user_options)
            place = await admission_for(self.user).admit(self, self.choice.template, self.user.name,
                                                         self._user_identity()["groups"], self._in_line)
        except SpawnException as e:
            raise user_facing(e)
        finally:
            if self._record is not None:
                self._record.pop("queued", None)
        if self._waiting is not None:  # admitted: the stored wait ends (a refused or cancelled
            self._waiting = None       # wait ends with the hub's stop, which stores the state;
            self._write_waiting()      # one cut by the hub's own shutdown must stay stored)
        self._record["quota_place"] = place.to_record()
        await maybe_future(super().run_pre_spawn_hook())

    def _in_line(self, message: str) -> None:
        """The spawn waits in its template's line: say so on the progress page and, while it
        waits, in the state the hub shows (``queued``: the position message; for the fleet).

        On joining the line the wait is also written to the hub's database at once, so a hub
        restarted while the spawn waits can tell the user their place was lost (load_state)."""
        if self._waiting is None:
            self._waiting = {"template": self.choice.template.display_name, "since": time.time()}
            self._write_waiting()
        self._record["queued"] = message
        self._event(5, message)

    def _write_waiting(self) -> None:
        """Store (or drop) ``waiting`` in the server's stored state now. The hub writes the
        server's whole state only once it has started or stopped, which a restart pre-empts;
        this touches that one key and leaves the rest as stored."""
        orm_spawner, db = self.orm_spawner, getattr(self.user, "db", None)
        if orm_spawner is None or db is None:
            return
        state = dict(orm_spawner.state or {})
        state.pop("waiting", None)
        if self._waiting is not None:
            state["waiting"] = self._waiting
        orm_spawner.state = state
        db.commit()

    async def prepare(self, user_options: dict | None) -> None:
        """Check the choice and build the child spawner; nothing is started yet.

        An invalid choice raises a 400 ``SpawnException`` (see errors.py): the REST API answers
        400 with the message, the spawn page shows the form again with it.
        """
        self._events.reset()
        self._child_start_begun = False
        self._notice = None  # shown on the form until the user starts again
        choice = await self.resolve(user_options)
        t = choice.template
        values = self._placeholder_values(choice)
        try:
            cls = spawner_class_for(t.spawner_class)
            adapter = adapter_for(cls)
            mapped = adapter.resource_kwargs(choice)
        except TemplateError as e:
            self.log.error("Template %s (catalogue %s): %s", t.name, t.version, e)
            raise failed(f"Template {t.name!r} cannot be used: {e}", "template_error") from e
        self._mount_input = None
        if t.spec.get("mounts"):
            if t.spec["resource_type"] != "container" or not adapter.supports_mounts:
                raise refused(f"Template {t.display_name!r} cannot be used: mounts are supported "
                              "for container templates only so far")
            self._mount_input = (t.spec["mounts"], values)
        kwargs = resolve_placeholders(t.spawner_kwargs, values, reformatted=adapter.reformatted_kwargs)
        _check_braces_for_templating(cls, t, values)
        kwargs.update(mapped)
        self.choice = choice
        self._record = {
            "template": t.name,
            "catalogue_version": t.version,
            "options": choice.to_options(),
            "child_class": _class_path(cls),
            "child_kwargs": kwargs,
            "environment": resolve_placeholders(  # KubeSpawner formats its environment again
                t.environment, values,
                reformatted=t.environment if "environment" in adapter.reformatted_kwargs else ()),
            "lifetime_minutes": choice.lifetime_minutes,
        }
        try:
            self.child = self._build_child(cls, kwargs)
        except SpawnException:
            raise
        except Exception as e:  # a trait value the class refuses, a child that cannot set itself up
            self.log.error("Template %s (catalogue %s): building %s failed: %r", t.name, t.version, cls.__name__, e)
            raise failed(f"Template {t.name!r} cannot be used: {cls.__name__} could not be set up: {e}",
                         "template_error") from e
        applied = await self._apply_group_overrides_to_child(protected=set(kwargs))
        self._record["child_kwargs"] = {**applied, **kwargs}
        adapter.lower_cpu_weight(self.child, CpuWeight(nice=self.child_nice, cpu_shares=self.child_cpu_shares))
        self._adopt_child_timeouts()
        machine_backed = t.spec["resource_type"] in MACHINE_RESOURCE_TYPES  # others need no settings
        self.machine = lease_for(self, self._orchestrator if machine_backed else None, t.spec,
                                 choice.deployment, choice.resources, values)
        if self.machine is not None:
            self.machine.check(cls)
            self._record["machine_source"] = lease_record(self.machine)
            if self.machine.kind == POOL:
                await self.machine.claim_pool_host()  # a full pool refuses the spawn now (503)
            else:
                self.start_timeout += self._orchestrator.setup_timeout
        self._event(10, f"Template {t.display_name} (catalogue version {t.version}) on {choice.provider}")

    def _adopt_child_timeouts(self) -> None:
        """The hub waits as long as the child allows (plus the margin, plus machine setup)."""
        self.start_timeout = self.child.start_timeout + HUB_TIMEOUT_MARGIN
        self.http_timeout = self.child.http_timeout

    async def _apply_group_overrides_to_child(self, protected: set[str]) -> dict:
        """Apply ``group_overrides`` for the user's groups to the child; return what to record.

        JupyterHub applies them to MultipleSpawner itself before ``prepare``; the child gets
        them here, in the same order and with the same rules (callables are called with the
        child, dicts merge), for the child's traits that the template's ``spawner.kwargs`` and
        the chosen resources (``protected``) do not set: those win, as user options win over
        group overrides in JupyterHub. The applied values (except ``environment``, which start
        hands over anyway and which may hold secrets) are returned for the state record, so
        the same child is rebuilt after a restart.
        """
        overrides = self.group_overrides
        if callable(overrides):
            overrides = await maybe_future(overrides(self))
        groups = {g.name for g in self.user.groups}
        applied = {}
        for key in sorted(overrides or {}):
            override = overrides[key]
            if not groups & set(override["groups"]):
                continue
            for trait, value in override["spawner_override"].items():
                if trait in protected or not self.child.has_trait(trait):
                    continue
                if callable(value):
                    value = value(self.child)
                current = getattr(self.child, trait)
                if isinstance(value, dict) and isinstance(current, dict):
                    recursive_update(current, value)
                else:
                    setattr(self.child, trait, value)
                self.log.info("%s: group override %s sets %s of the child", self._log_name, key, trait)
                if trait != "environment":
                    applied[trait] = getattr(self.child, trait)
        for trait, value in list(applied.items()):
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                self.log.warning("%s: group override of %s is not JSON; a rebuilt child (after a "
                                 "hub restart) takes it from the configuration", self._log_name, trait)
                del applied[trait]
        return applied

    @property
    def _orchestrator(self) -> MachineOrchestrator:
        """The operator's machine settings; an invalid one (e.g. a malformed
        ``c.MachineOrchestrator.pool_hosts``) fails the spawn with its message (500, reason
        ``config_error``) rather than an unhandled error."""
        try:
            return MachineOrchestrator(parent=self)
        except TraitError as e:
            raise failed(f"The hub's machine settings are invalid: {e}", "config_error") from e

    @property
    def metrics_template(self) -> str:
        """The ``template`` label of this spawn's metrics: the template it names if the
        catalogue has it, else the one it resolved to, else ``(none)`` (never the user's text)."""
        name = self.user_options.get("template") if isinstance(self.user_options, dict) else None
        current = self.catalogue_source.current
        if isinstance(name, str) and current is not None and name in current.templates:
            return name
        return self.choice.template.name if self.choice is not None else NO_TEMPLATE

    def _placeholder_values(self, choice: Choice) -> dict[str, str]:
        deployment = choice.deployment or {}
        return {
            "JUPYTERHUB_USER": self.user.name,
            "JUPYTERHUB_SERVER_NAME": self.name,
            "DEPLOYMENT_NAME": deployment.get("name", ""),
            "DEPLOYMENT_PROVIDER": deployment.get("provider", ""),
            "DEPLOYMENT_IMAGE": deployment.get("image", ""),
            "TEMPLATE_NAME": choice.template.name,
        }

    def _build_child(self, cls: type[Spawner], kwargs: dict) -> Spawner:
        """Instantiate the child with the hub's plumbing, our config, and the template's kwargs."""
        plumbing = {name: getattr(self, name) for name in _PLUMBING}
        # No user_options: ours (template, resources, ...) mean nothing to the child, whose
        # traits carry the choice; batchspawner would put each one into its job script's variables.
        child = cls(
            config=self.config,
            _deprecated_db_session=self._deprecated_db_session,
            **plumbing,
            **kwargs,
        )
        # the child was constructed with our orm_spawner: it must not restore *our* state
        child.clear_state()
        child.api_token = self.api_token
        return child

    def _child_from_record(self, record: dict) -> Spawner | None:
        try:
            cls = spawner_class_for(record["child_class"])
        except TemplateError as e:
            self.log.error("Cannot rebuild the server of %s: %s", self._log_name, e)
            return None
        return self._build_child(cls, dict(record.get("child_kwargs", {})))

    # ---- progress ----------------------------------------------------------------------
    def _event(self, progress: int, message: str) -> None:
        self.log.info("%s: %s", self._log_name, message)
        self._events.add(progress, message)

    async def progress(self):
        """Our own phase events as they happen; once the child's start began, the child's events.

        The child's progress generator is forwarded whenever its start has begun and the spawn
        is still pending, also if its ``start`` already returned (the hub then still waits for
        the server to answer): a reader that connects late gets the child's events too. The
        child's percentages are mapped into the range above our last event, so the spawn page's
        bar never moves backwards at the handover.
        """
        async for event in self._events.follow(until=lambda: not self._spawn_pending):
            yield event
        if self.child is not None and self._child_start_begun and self._spawn_pending:
            async for event in self._events.handover(self.child.progress()):
                yield event

    _child_start_begun = False

    @observe("port")
    def _forward_reported_port(self, change):
        """A port reported to the hub while the child starts belongs to the child.

        batchspawner's job reports the notebook's port to ``/hub/api/batchspawner``, which sets
        it on the hub's spawner (this one) while the child's ``start`` waits for it.
        """
        if self.child is not None and self._child_start_begun and self._spawn_pending:
            self.child.port = change.new

    # ---- start / poll / stop -----------------------------------------------------------
    @counts_failures
    async def start(self):
        """Start the child spawner built by :meth:`prepare`; return its URL.

        Any failure is a ``SpawnException`` whose message names the step and the reason
        (``The start step failed: DockerSpawner: ...``); the hub then calls :meth:`stop`.
        """
        self._last_failure = None
        try:
            return await self._start()
        except SpawnException as e:
            self._record_failure(e.message)
            raise user_facing(e)
        except Exception as e:
            self._record_failure(str(e) or type(e).__name__)
            raise

    def _record_failure(self, message: str) -> None:
        """Keep why this start failed (``last_failure`` in the state, kept when the hub clears
        the state after the failure, until the next start), with its template and provider:
        the fleet lists the server as ``failed`` with it."""
        record = self._record or {}
        self._last_failure = {"time": utc_timestamp(), "message": message[:1000],
                              "template": record.get("template"),
                              "provider": (record.get("options") or {}).get("provider")}

    async def _start(self):
        if self.child is None:
            # run_pre_spawn_hook was bypassed (e.g. start() called directly)
            await self.prepare(self.user_options)
        record = self._record
        # what pre_spawn_hook and c.Spawner.environment put on us, then the template's own
        self.child.environment = {**self.child.environment, **self.environment, **record["environment"]}
        self.child.cert_paths = self.cert_paths
        self.child.handler = getattr(self, "handler", None)
        self.child.api_token = self.api_token
        if self.machine is not None:
            # create/claim, wait, configure; the child's connection traits go into the record
            traits = await self.machine.acquire(self._event)
            record["child_kwargs"].update(traits)
            for name, value in traits.items():
                setattr(self.child, name, value)
        try:
            if self._mount_input is not None:
                await self._mount_storage()
            self._event(30, f"Starting {type(self.child).__name__}")
            await adapter_for(type(self.child)).before_start(self, self.child)
        except BaseException:
            await self._unmount_storage()
            raise
        self._child_start_begun = True
        self._events.finish()  # our own phase is over: progress() goes on with the child's events
        began = time.monotonic()
        try:
            url = await self._start_child()
        except BaseException as e:
            if self.machine is not None:
                await self.machine.start_failed(e)  # releases the machine, names the step
            await self._unmount_storage()
            if isinstance(e, (asyncio.CancelledError, SpawnException)):
                raise
            raise self._start_error(e) from e
        observe_phase(record["template"], record["options"]["provider"], "start", time.monotonic() - began)
        if record.get("lifetime_minutes"):
            self._deadline = time.time() + 60 * record["lifetime_minutes"]
            self._extended_until = None
            self._schedule_expiry()
        self._last_child = {k: record[k] for k in ("child_class", "child_kwargs")}
        return url

    # ---- storage mounts ----------------------------------------------------------------
    @property
    def _mount_key(self) -> str:
        """Names this server's mount directory and markers (user and server names may hold
        any character; the hash holds none that needs care)."""
        return hashlib.sha256(f"{self.user.name}\0{self.name}".encode()).hexdigest()[:16]

    async def _mount_storage(self) -> None:
        """Mount the template's ``mounts`` on the hub host (docs/mounts.md) with the key and
        pinned host key from the user's auth_state and hand them to the child as bind mounts.
        A required mount that cannot be made fails the spawn (500) naming the mount and the
        cause, after unmounting what was made; one that is not required is skipped, and the
        progress page says why."""
        specs, values = self._mount_input
        template = self._record["template"]
        auth_state = await self.user.get_auth_state()
        try:
            planned = plan(specs, values, auth_state)
        except PlanError as e:
            raise failed(str(e), "mount_failed",
                         log_message=f"{self._log_name}: template {template!r}: {e}") from None
        server_dir = Path(self.mounts_runtime_dir) / self._mount_key
        self._mounts_dir = server_dir  # from now on stop() removes it
        self._mounts = []
        try:
            made = await mount_all(planned, server_dir, f"ms-{self._mount_key}-", self.container_uid,
                                   self.container_gid, lambda message: self._event(20, message),
                                   timeout=self.mount_timeout)
        except MountFailed as e:
            raise failed(str(e), "mount_failed",
                         log_message=f"{self._log_name}: template {template!r}: {e}") from None
        self._mounts = made
        binds = [(str(m.host_path), m.target, m.readonly) for m in made]
        adapter_for(type(self.child)).bind_mounts(self.child, binds, self.container_home)

    async def _unmount_storage(self) -> None:
        """Unmount this server's storage mounts and remove their directory (idempotent)."""
        if self._mounts_dir is None and not self._mounts:
            return
        problems = await unmount_all(self._mounts or [], self._mounts_dir)
        for problem in problems:
            self.log.error("%s: unmounting storage failed: %s", self._log_name, problem)
        if not problems:  # else they stay in the state, and the next stop tries again
            self._mounts, self._mounts_dir = None, None

    async def _start_child(self):
        """``child.start()`` (through its adapter's :meth:`~.children.ChildAdapter.start`) within the
        child's ``start_timeout`` (a TimeoutError saying so)."""
        limit = self.child.start_timeout
        task = asyncio.ensure_future(adapter_for(type(self.child)).start(self.child))
        try:
            await asyncio.wait([task], timeout=limit)
        finally:  # timed out, or we were cancelled: cancel the child's start, let it clean up
            timed_out = not task.done()
            if timed_out:
                task.cancel()
                await asyncio.wait([task])
        if timed_out:
            raise TimeoutError(f"{type(self.child).__name__} did not start within {limit:g} "
                               "seconds (start_timeout)")
        return task.result()  # the child's URL, or its own error

    def _start_error(self, error: BaseException) -> SpawnException:
        """What the user sees when the child of a local/container template fails to start:
        ``The start step failed: <child class>: <why>`` (the machine path words it the same).
        The hub's log line has the error itself, after the service its adapter names for it."""
        child = type(self.child).__name__
        named = adapter_for(type(self.child)).failure_reason(self.child, error)
        reason = named or str(error).strip() or type(error).__name__
        if child not in reason:
            reason = f"{child}: {reason}"
        template = self._record["template"]
        because = f" ({named})" if named else ""
        return failed(
            f"The start step failed: {reason}",
            "timeout" if isinstance(error, TimeoutError) else "start_failed",
            log_message=f"{self._log_name}: template {template!r}: {child}.start failed{because}: {error!r}",
        )

    async def poll(self):
        """The child's status; a server whose session ran out is stopped and reported gone."""
        if self.child is None:
            return 0
        if self._deadline is not None and await self._session_over():
            self.log.info("Session of %s ran out; stopping it", self._log_name)
            await self.stop()
            return 0
        if self._deadline is not None and self._expiry_handle is None:
            self._schedule_expiry()  # state was loaded before the event loop ran
        status = await maybe_future(self.child.poll())
        if status is not None and not self._spawn_pending:
            admission_for(self.user).release(self)  # the hub calls no stop() for a server found gone
            if self.machine is not None:
                await self.machine.release()
            await self._unmount_storage()
        return status

    async def stop(self, now=False):
        """Stop the child (if its start began, here or before a hub restart), the session
        timer, the storage mounts, the machine and the quota place. A spawn refused or cancelled before the child's
        start (over quota, in line) has nothing of the child's to stop. Called by the hub while
        it waits for the started server to answer, it means the hub gave up on it
        (``http_timeout``): recorded as this start's failure."""
        if self._waiting_for_response:
            self._record_failure(f"The notebook server started but did not answer within {self.http_timeout} "
                                 "seconds (http_timeout)")
        self._cancel_expiry()
        try:
            if self.child is not None and self._child_start_begun:  # else nothing of the child runs
                await maybe_future(self.child.stop(now=now))
        finally:
            try:
                await self._unmount_storage()
            finally:
                if self.machine is not None:
                    await self.machine.release()
                admission_for(self.user).release(self)
        self._deadline = None
        self._extended_until = None

    async def delete_forever(self):
        """Forward to a child built like the last server's, so its resources can be removed."""
        record = self._last_child or self._record
        child = self.child or (self._child_from_record(record) if record else None)
        if child is not None:
            await maybe_future(child.delete_forever())

    # ---- session lifetime --------------------------------------------------------------
    def _schedule_expiry(self) -> None:
        self._cancel_expiry()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # poll() schedules it once the hub's loop runs
        delay = max(0.0, self.deadline - time.time()) + self.lifetime_grace
        self._expiry_handle = loop.call_later(delay, lambda: asyncio.ensure_future(self.poll_and_notify()))

    def _cancel_expiry(self) -> None:
        if self._expiry_handle is not None:
            self._expiry_handle.cancel()
            self._expiry_handle = None

    @property
    def deadline(self) -> float | None:
        """Unix time at which the current session ends (an extension read from
        ``extension_file`` included), or None."""
        if self._deadline is None:
            return None
        return max(self._deadline, self._extended_until or 0.0)

    async def _session_over(self) -> bool:
        """Has the session's deadline passed? Once it has, ``extension_file`` is read (in a
        worker thread): an extension of this very session moves the deadline and the timer."""
        if time.time() < self.deadline:
            return False
        if self.extension_file:
            try:
                extensions = await asyncio.to_thread(read_extensions, self.extension_file)
            except ValueError as e:
                self.log.error("%s: %s; the session ends at its own deadline", self._log_name, e)
                extensions = {}
            until = extended_deadline(extensions, f"{self.user.name}/{self.name}", self._deadline)
            if until is not None and until > time.time():
                self.log.info("Session of %s extended until %s", self._log_name,
                              utc_timestamp(until))
                self._extended_until = until
                self._schedule_expiry()
                return False
        return True

    # ---- state -------------------------------------------------------------------------
    def get_state(self):
        state = super().get_state()
        if self._record is not None:
            state["multiple"] = dict(self._record, deadline=self._deadline)
        if self.child is not None:
            state["child_state"] = self.child.get_state()
        if self.machine is not None and self.machine.held:
            state["machine"] = self.machine.to_state()
        if self._last_child is not None:
            state["last_child"] = self._last_child
        if self._notice:
            state["notice"] = self._notice
        if self._last_failure is not None:
            state["last_failure"] = self._last_failure
        if self._mounts_dir is not None:
            state["mounts"] = mounts_to_state(self._mounts or [], self._mounts_dir)
        return state

    def load_state(self, state):
        super().load_state(state)
        self._last_child = state.get("last_child")
        # a spawn that waited in line when the hub stopped is gone with that hub process
        waiting = state.get("waiting")
        self._notice = lost_place_notice(waiting) if isinstance(waiting, dict) else state.get("notice")
        self._last_failure = state.get("last_failure")
        if state.get("mounts"):
            self._mounts, self._mounts_dir = mounts_from_state(state["mounts"])
        record = state.get("multiple")
        if not record:
            return
        self._record = record
        self._deadline = record.get("deadline")
        self.child = self._child_from_record(record)
        if self.child is not None:
            self.child.load_state(state.get("child_state", {}))
            self._adopt_child_timeouts()
            self._child_start_begun = True  # a server that was started: stop() stops the child
        if record.get("machine_source"):
            self.machine = lease_from_record(self, self._orchestrator, record["machine_source"], state.get("machine"))
            try:
                reap_once(self, self._orchestrator)  # first machine-backed server seen at hub start
            except RuntimeError:
                pass  # no running loop yet: the first machine creation reaps
        if self._deadline is not None:
            self._schedule_expiry()
        if record.get("quota_place"):
            place = Place.from_record(record["template"], self.user.name, record["quota_place"])
            admission_for(self.user).restored(self, place)

    def clear_state(self):
        super().clear_state()
        self._cancel_expiry()
        if self.quota_place is not None:
            admission_for(self.user).release(self)
        if self.child is not None:
            self.child.clear_state()
        self.child = None
        self.machine = None
        self.choice = None
        self._record = None
        self._deadline = None
        self._extended_until = None


def _check_braces_for_templating(cls: type[Spawner], template, values: dict[str, str]) -> None:
    """Refuse (400) a placeholder value with braces in a field ``cls`` renders as a template."""
    fields = set(adapter_for(cls).templated_kwargs) & set(template.spawner_kwargs)
    if not fields:
        return
    plain = {k: v.replace("{", "").replace("}", "") for k, v in values.items()}
    for name in sorted(fields):
        spec = template.spawner_kwargs[name]
        if resolve_placeholders(spec, values) != resolve_placeholders(spec, plain):
            raise refused(f"Template {template.name!r} cannot be used by this server: its "
                          f"{name} would carry a brace from the user or server name.")
