"""The template catalogue: what users may spawn, read from JSON/YAML files and reloaded live.

A catalogue is built from one or more files (or directories of ``*.json``, ``*.yaml``,
``*.yml`` files, read in name order). Each file is one of

* a combined document ``{"deployments": {...}, "templates": [...]}``,
* a bare deployments mapping ``{resource_type: [{name, provider, image, ...}]}``,
* a bare list of templates ``[{name, resource_type, providers, spawner, ...}]``

(the last two are the thesis format). Every file is validated against
``schema/catalogue.schema.json``; then the merged catalogue is checked as a whole (unique
template names, a deployment for every provider a template names, defaults inside their bounds,
known placeholders, spawner and configurer classes from the operator's allow-lists
(:class:`CataloguePolicy`), a spawner class that imports). Every problem is reported as
``file: at path: problem``. Parsing is bounded (:func:`parse_document`: size, depth, no YAML
aliases), so a hostile file cannot exhaust memory, stack or time.

:class:`CatalogueSource` hands out the current catalogue and reloads it when a file changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from .classes import TemplateError, spawner_class_for
from .legacy_format import translate as translate_legacy
from .metrics import CATALOGUE_RELOAD_ERRORS

RESOURCE_TYPES = ("local", "container", "virtual_machine", "bare_metal", "batch")
CATALOGUE_SUFFIXES = (".json", ".yaml", ".yml")
#: the resources a template may offer a choice of (``resources`` in the schema)
RESOURCE_KEYS = ("cpu", "memory_mb", "gpus")
#: the options that hold numbers: the resources and the session length
NUMBER_KEYS = (*RESOURCE_KEYS, "lifetime_minutes")
#: numbers beyond this magnitude are refused as choices (JSON's exact integer range)
MAX_NUMBER_MAGNITUDE = 2**53

#: The spawner classes a template may name unless the operator configures
#: ``allowed_spawner_classes``: the children the suite supports, as dotted paths and under
#: their entry-point names. ``SimpleLocalProcessSpawner`` is deliberately absent: it runs the
#: notebook as the hub's own Unix user.
DEFAULT_SPAWNER_CLASSES = (
    "jupyterhub.spawner.LocalProcessSpawner",
    "localprocess",
    "default",
    "dockerspawner.DockerSpawner",
    "docker",
    "dockerspawner.SwarmSpawner",
    "docker-swarm",
    "kubespawner.KubeSpawner",
    "batchspawner.SlurmSpawner",
    "cloudsshspawner.CloudSSHSpawner",
    "cloudssh",
)
#: The configurer classes a template may name unless the operator configures
#: ``allowed_configurer_classes``.
DEFAULT_CONFIGURER_CLASSES = ("ansible", "multiplespawner.configurers.AnsibleConfigurer")
#: Configurer options a template may not set: where playbooks and run directories live on the
#: hub is the operator's choice (``c.AnsibleConfigurer.playbook_dir`` etc.), not a template's.
HUB_PATH_CONFIGURER_OPTIONS = ("playbook_dir", "work_dir")
#: Jinja markup, which Ansible would evaluate on the hub (``lookup('pipe', ...)`` runs commands).
_JINJA_RE = re.compile(r"\{\{|\{%|\{#")
#: Default size limit of one catalogue file or editor request body.
DEFAULT_MAX_BYTES = 1024 * 1024
#: How deeply lists and mappings may nest in a catalogue document (a template needs about 6).
MAX_DEPTH = 32


@dataclass(frozen=True)
class CataloguePolicy:
    """What the operator lets catalogue documents contain, beyond the schema.

    ``spawner_classes`` and ``configurer_classes`` are allow-lists of the names templates may
    write (checked before anything is imported); ``max_bytes`` bounds each file or request
    body. The hub builds one from MultipleSpawner's traits, the editor service from its own.
    """

    spawner_classes: frozenset = frozenset(DEFAULT_SPAWNER_CLASSES)
    configurer_classes: frozenset = frozenset(DEFAULT_CONFIGURER_CLASSES)
    max_bytes: int = DEFAULT_MAX_BYTES


DEFAULT_POLICY = CataloguePolicy()

#: Placeholders resolved in spawner kwargs and environment at spawn time.
PLACEHOLDERS = (
    "JUPYTERHUB_USER",
    "JUPYTERHUB_SERVER_NAME",
    "DEPLOYMENT_NAME",
    "DEPLOYMENT_PROVIDER",
    "DEPLOYMENT_IMAGE",
    "TEMPLATE_NAME",
)
_PLACEHOLDER_RE = re.compile(r"\{([A-Z][A-Z0-9_]*)\}")


def resolve_placeholders(value: Any, values: dict[str, str], reformatted: Iterable[str] = ()) -> Any:
    """A copy of ``value`` with ``{NAME}`` placeholders replaced from ``values``, once.

    Placeholders are replaced in every string, dict keys included (DockerSpawner's ``volumes``
    maps host paths such as ``/home/{JUPYTERHUB_USER}`` to mounts). Only upper-case names are
    placeholders; ``{username}``-style fields that child spawners format themselves are left
    alone, and names not in ``values`` stay as they are (the catalogue check refuses unknown
    ones).

    A substituted value is text, never format syntax. ``reformatted`` names the top-level keys
    of ``value`` (a child's kwargs) whose strings the child passes through ``str.format`` again
    (``notebook_dir``, DockerSpawner's ``volumes``, ...): there the braces *of the substituted
    values* are doubled, so that the child's formatting yields the value itself. A user named
    ``a{b`` thus gets ``/home/a{b``, not an "expected '}'" error or a format field of the
    user's choosing. Braces the template itself wrote are kept as they are in every field.
    """
    reformatted = frozenset(reformatted)

    def substitute(text: str, escape: bool) -> str:
        def value_of(m: re.Match) -> str:
            found = values.get(m.group(1))
            if found is None:
                return m.group(0)
            return found.replace("{", "{{").replace("}", "}}") if escape else found
        return _PLACEHOLDER_RE.sub(value_of, text)

    def walk(item: Any, escape: bool) -> Any:
        if isinstance(item, str):
            return substitute(item, escape)
        if isinstance(item, dict):
            return {walk(k, escape): walk(v, escape) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v, escape) for v in item]
        return item

    if isinstance(value, dict) and reformatted:
        return {walk(k, False): walk(v, k in reformatted) for k, v in value.items()}
    return walk(value, False)


def _load_schema() -> dict:
    text = resources.files(__package__).joinpath("schema/catalogue.schema.json").read_text()
    return json.loads(text)


SCHEMA = _load_schema()


@cache
def _validator(kind: str | None):
    """The validator for the whole file schema (``None``), one of its ``$defs``
    (``deployments``, ``templates``) or a pool's ``hosts`` list (``pool_hosts``).

    Made at first use: importing jsonschema takes seconds (its optional format checkers build
    grammars at import), which a command that only prints its help must not pay.
    """
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(SCHEMA)
    if kind is None:
        validator_cls.check_schema(SCHEMA)
        return validator_cls(SCHEMA)
    shared = {"$schema": SCHEMA["$schema"], "$defs": SCHEMA["$defs"]}
    if kind == "pool_hosts":
        return validator_cls({**shared, **SCHEMA["$defs"]["deployment"]["properties"]["hosts"]})
    return validator_cls({**shared, "$ref": f"#/$defs/{kind}"})


_IDENTIFIER_RE = re.compile(SCHEMA["$defs"]["identifier"]["pattern"])


def is_identifier(value: Any) -> bool:
    """Is ``value`` a valid template/deployment/provider name (the schema's ``identifier``)?"""
    return isinstance(value, str) and _IDENTIFIER_RE.search(value) is not None


# ---- errors ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One thing wrong with a catalogue: which file, where inside it, and what."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: at {self.path or '/'}: {self.message}"


class CatalogueError(ValueError):
    """The catalogue cannot be used; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def _json_path(parts: Iterable) -> str:
    return "/" + "/".join(str(p) for p in parts)


# ---- the model ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bound:
    """A resource choice: ``default`` within ``[min, max]`` (min/max default to the default)."""

    default: float
    min: float
    max: float

    @classmethod
    def from_spec(cls, spec: dict) -> "Bound":
        return cls(spec["default"], spec.get("min", spec["default"]), spec.get("max", spec["default"]))


@dataclass(frozen=True)
class Template:
    """One resource template, as validated. ``spec`` is the raw (JSON) document."""

    spec: dict
    source: str
    version: str = ""

    name = property(lambda self: self.spec["name"])
    resource_type = property(lambda self: self.spec["resource_type"])
    providers = property(lambda self: list(self.spec["providers"]))
    enabled = property(lambda self: self.spec.get("enabled", True))
    requires = property(lambda self: list(self.spec.get("requires", [])))
    environment = property(lambda self: dict(self.spec.get("environment", {})))
    spawner_class = property(lambda self: self.spec["spawner"]["class"])
    spawner_kwargs = property(lambda self: dict(self.spec["spawner"].get("kwargs", {})))

    @property
    def display_name(self) -> str:
        return self.spec.get("display_name") or self.name

    @property
    def description(self) -> str:
        return self.spec.get("description", "")

    @cached_property
    def resources(self) -> dict[str, Bound]:
        """``{"cpu"|"memory_mb"|"gpus": Bound}`` for the resources this template offers."""
        return {k: Bound.from_spec(v) for k, v in self.spec.get("resources", {}).items()}

    @cached_property
    def lifetime(self) -> Bound | None:
        """Session length in minutes, or None.

        ``max`` defaults to the default; ``min`` to 1 minute, or the default if that is shorter
        (shorter sessions than the default are fine unless the template sets ``min``).
        """
        spec = self.spec.get("lifetime_minutes")
        if not spec:
            return None
        default = spec["default"]
        return Bound(default, spec.get("min", min(1, default)), spec.get("max", default))

    def allows(self, user_name: str, groups: Iterable[str], admin: bool) -> bool:
        """May this user spawn this template (ignoring ``enabled`` and prerequisites)?

        Admins may use every template. ``admin_only`` templates are for admins alone. Otherwise
        a template that lists users and/or groups is for those users and members of those
        groups; a template that lists neither is for everyone.
        """
        if admin:
            return True
        access = self.spec.get("access", {})
        if access.get("admin_only"):
            return False
        users, wanted_groups = access.get("users", []), access.get("groups", [])
        if not users and not wanted_groups:
            return True
        return user_name in users or bool(set(wanted_groups) & set(groups))


@dataclass(frozen=True)
class Catalogue:
    """A validated, merged catalogue. ``version`` is a content hash identifying this load."""

    deployments: dict[str, list[dict]]
    templates: dict[str, Template]
    version: str
    sources: tuple[str, ...] = field(default_factory=tuple)

    def deployment(self, template: Template, provider: str) -> dict | None:
        """The first deployment of ``template``'s resource type run by ``provider``."""
        for entry in self.deployments.get(template.resource_type, []):
            if entry["provider"] == provider:
                return entry
        return None

    def usable_by(self, user_name: str, groups: Iterable[str], admin: bool) -> list[Template]:
        """Enabled templates this user may use, in catalogue order (prerequisites not checked)."""
        groups = list(groups)
        return [t for t in self.templates.values() if t.enabled and t.allows(user_name, groups, admin)]


def is_number(value: Any) -> bool:
    """True for a JSON number that is finite and within ``±2**53`` (never for a bool): one a
    bound can be compared with and a message can print."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, int):
        return abs(value) <= MAX_NUMBER_MAGNITUDE
    return math.isfinite(value) and abs(value) <= MAX_NUMBER_MAGNITUDE


# ---- reading --------------------------------------------------------------------------------
class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases and with nesting capped at :data:`MAX_DEPTH`.

    Aliases (``*name``) are refused outright: each one repeats a whole subtree, so a few
    hundred bytes can expand to gigabytes ("billion laughs"). Depth is counted while composing,
    before the recursive composer could exhaust the stack.
    """

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not accepted here; write the value out",
                self.peek_event().start_mark)
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _plain_data_problem(value: Any, path: list, depth: int = 1) -> str | None:
    """Why ``value`` is not plain JSON data nested at most MAX_DEPTH deep (None: it is)."""
    if depth > MAX_DEPTH:
        return f"at {_json_path(path)}: nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"at {_json_path(path)}: key {k!r} is not a string"
            problem = _plain_data_problem(v, path + [k], depth + 1)
            if problem:
                return problem
    elif isinstance(value, list):
        for i, v in enumerate(value):
            problem = _plain_data_problem(v, path + [i], depth + 1)
            if problem:
                return problem
    elif value is not None and not isinstance(value, (str, bool, int, float)):
        return f"at {_json_path(path)}: {type(value).__name__} values are not accepted"
    return None


def parse_document(data: str | bytes, filename: str, policy: CataloguePolicy = DEFAULT_POLICY,
                   syntax: str | None = None) -> Any:
    """Parse one catalogue document (a file's content or a request body), bounded.

    ``syntax`` is ``"json"`` or ``"yaml"``; by default the file name's suffix decides. The
    document must be UTF-8, at most ``policy.max_bytes`` long, nested at most
    :data:`MAX_DEPTH` deep, YAML without aliases, and plain data (strings, numbers, booleans,
    null, lists, mappings with string keys). Anything else raises :class:`CatalogueError`
    naming ``filename``; no other exception escapes.
    """
    syntax = syntax or ("json" if filename.endswith(".json") else "yaml")
    label = syntax.upper()
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > policy.max_bytes:
        raise CatalogueError([Problem(filename, "", f"too large: {len(raw)} bytes; at most {policy.max_bytes} are accepted")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CatalogueError([Problem(filename, "", f"not UTF-8 text ({e.reason} at byte {e.start})")])
    try:
        value = json.loads(text) if syntax == "json" else yaml.load(text, Loader=_BoundedLoader)
    except RecursionError:
        raise CatalogueError([Problem(filename, "", f"not valid {label}: nested deeper than {MAX_DEPTH} levels")])
    except (ValueError, yaml.YAMLError) as e:
        raise CatalogueError([Problem(filename, "", f"not valid {label}: {e}")])
    problem = _plain_data_problem(value, [])
    if problem:
        raise CatalogueError([Problem(filename, "", f"not valid {label}: {problem}")])
    return value


def read_document(path: Path, policy: CataloguePolicy = DEFAULT_POLICY) -> Any:
    """Read and parse the catalogue file ``path`` (blocking), reading at most one byte more
    than ``policy.max_bytes``; a file in the original MultipleSpawner's format is translated
    to this suite's (:mod:`multiplespawner.legacy_format`, which logs what to write instead).
    Raises :class:`CatalogueError` if it cannot be read or parsed."""
    try:
        with open(path, "rb") as f:
            data = f.read(policy.max_bytes + 1)
    except OSError as e:
        raise CatalogueError([Problem(str(path), "", f"cannot read: {e.strerror or e}")])
    return translate_legacy(parse_document(data, str(path), policy), str(path))


def document_kind(document: Any) -> str | None:
    """Which schema a file's top level follows: None (combined), 'deployments' or 'templates'."""
    if isinstance(document, list):
        return "templates"
    if isinstance(document, dict) and document and not ({"deployments", "templates"} & set(document)):
        return "deployments"
    return None


@dataclass(frozen=True)
class Document:
    """One validated catalogue file, with where its parts sit inside the file (for messages)."""

    filename: str
    deployments: dict
    templates: list
    deployments_at: tuple = ()
    templates_at: tuple = ()


def validate_document(document: Any, filename: str) -> Document:
    """Validate one file's parsed content against the schema.

    Raises :class:`CatalogueError` naming the file, the JSON path inside it and the problem.
    """
    if document is None:
        document = {}
    kind = document_kind(document)
    errors = sorted(_validator(kind).iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        raise CatalogueError(
            [Problem(filename, _json_path(e.absolute_path), _message(e)) for e in errors]
        )
    if kind == "templates":
        return Document(filename, {}, document)
    if kind == "deployments":
        return Document(filename, document, [])
    return Document(filename, document.get("deployments", {}), document.get("templates", []),
                    ("deployments",), ("templates",))


def pool_hosts_problems(hosts: Any) -> list[str]:
    """What is wrong with ``hosts`` as a ``bare_metal`` deployment's ``hosts`` list.

    The catalogue schema's own rules (a non-empty list of ``{address, host_key}`` with optional
    ``port``, ``username``, ``capacity``, nothing else), so a list accepted here is accepted in
    a catalogue file and the other way round. Each problem reads ``/<index>/<key>: <why>``
    (``: <why>`` for the list itself), to follow the name of what holds the list; an empty
    list means none.
    """
    errors = sorted(_validator("pool_hosts").iter_errors(hosts), key=lambda e: list(e.absolute_path))
    return ["".join(f"/{p}" for p in e.absolute_path) + f": {_message(e)}" for e in errors]


def _message(error) -> str:
    """A ``jsonschema.ValidationError``'s message: the best match inside oneOf/anyOf/$ref
    chains says more than the umbrella error."""
    import jsonschema

    best = jsonschema.exceptions.best_match([error])
    return best.message


def _placeholder_problems(value: Any, filename: str, path: list) -> list[Problem]:
    """Unknown ``{NAME}`` placeholders in the strings of ``value``, dict keys included."""
    def unknown(text: str, where: list) -> list[Problem]:
        return [
            Problem(filename, _json_path(where), f"unknown placeholder {{{name}}}; known: "
                    + ", ".join(PLACEHOLDERS))
            for name in _PLACEHOLDER_RE.findall(text) if name not in PLACEHOLDERS
        ]

    problems = []
    if isinstance(value, str):
        problems += unknown(value, path)
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str):
                problems += unknown(k, path + [k])
            problems += _placeholder_problems(v, filename, path + [k])
    elif isinstance(value, list):
        for i, v in enumerate(value):
            problems += _placeholder_problems(v, filename, path + [i])
    return problems


def _bound_problems(spec: dict, filename: str, path: list) -> list[Problem]:
    problems = []
    lo, default, hi = spec.get("min"), spec["default"], spec.get("max")
    if lo is not None and default < lo:
        problems.append(Problem(filename, _json_path(path + ["default"]), f"default {default} is below min {lo}"))
    if hi is not None and default > hi:
        problems.append(Problem(filename, _json_path(path + ["default"]), f"default {default} is above max {hi}"))
    return problems


def _spawner_class_problems(spec: dict, filename: str, path: list, policy: CataloguePolicy,
                            check_class) -> list[Problem]:
    """The spawner class must be allow-listed (checked first: nothing is imported for a class
    outside the list), then pass ``check_class``."""
    name = spec["spawner"]["class"]
    where = _json_path(path + ["spawner", "class"])
    if name not in policy.spawner_classes:
        return [Problem(filename, where, f"spawner class {name!r} is not allowed: the operator lists the "
                        "classes templates may use in allowed_spawner_classes")]
    try:
        check_class(name)
    except TemplateError as e:
        return [Problem(filename, where, str(e))]
    return []


def _configurer_problems(spec: dict, filename: str, path: list, policy: CataloguePolicy) -> list[Problem]:
    """The configurer must be allow-listed; its options may not choose hub paths or carry Jinja."""
    configurer = spec.get("configurer")
    if configurer is None:
        return []
    path = path + ["configurer"]
    problems = []
    if configurer["class"] not in policy.configurer_classes:
        problems.append(Problem(filename, _json_path(path + ["class"]),
                                f"configurer class {configurer['class']!r} is not allowed: the operator "
                                "lists the classes templates may use in allowed_configurer_classes"))
    options = configurer.get("options", {})
    for key in HUB_PATH_CONFIGURER_OPTIONS:
        if key in options:
            problems.append(Problem(filename, _json_path(path + ["options", key]),
                                    f"{key} is a path on the hub: the operator sets it in the hub's "
                                    "configuration, a template may not"))
    playbook = options.get("playbook")
    if isinstance(playbook, str) and (playbook.startswith("/") or ".." in Path(playbook).parts):
        problems.append(Problem(filename, _json_path(path + ["options", "playbook"]),
                                "must be a relative path inside the playbook directory (no '..')"))
    problems += _jinja_problems(options, filename, path + ["options"])
    return problems


def _quota_problems(spec: dict, filename: str, path: list) -> list[Problem]:
    """``per: group`` needs the template's ``access.groups``; ``queue`` and ``per`` need ``running``."""
    quota = spec.get("quota")
    if quota is None:
        return []
    path = path + ["quota"]
    problems = []
    if quota.get("per") == "group" and not spec.get("access", {}).get("groups"):
        problems.append(Problem(filename, _json_path(path + ["per"]),
                                "per: group counts places per group of access.groups, and this template lists none"))
    for key in ("queue", "per", "queue_timeout"):
        if key in quota and "running" not in quota:
            problems.append(Problem(filename, _json_path(path + [key]),
                                    f"{key} needs running (the number of places)"))
    return problems


_MOUNT_TARGET_RULE = ("must be a relative path inside the notebook user's home "
                      "(not absolute, no '.' or '..', no control characters, backslashes, ':' or ',')")


def mount_target_parts(target) -> tuple[str, ...]:
    """The parts of a mount's ``target``: a relative path inside the notebook user's home (not
    absolute, no ``..`` or ``.`` parts, no control characters, ``\\``, ``:`` or ``,``: Docker's
    volume syntax). Raises ValueError saying so otherwise."""
    parts = tuple(p for p in target.split("/") if p) if isinstance(target, str) else ()
    if (not parts or target.startswith("/") or any(p in (".", "..") for p in parts)
            or re.search(r"[\x00-\x1f\x7f\\:,]", target)):
        raise ValueError(f"the mount target {_MOUNT_TARGET_RULE}")
    return parts


def _mounts_problems(spec: dict, filename: str, path: list) -> list[Problem]:
    """Each mount's ``target`` passes :func:`mount_target_parts`, targets are distinct and none
    lies inside another; the source's placeholders are known."""
    problems = []
    seen: list[tuple[str, ...]] = []
    for i, entry in enumerate(spec.get("mounts", [])):
        where = path + ["mounts", i]
        problems += _placeholder_problems(entry.get("source", {}), filename, where + ["source"])
        target = entry["target"]
        try:
            parts = mount_target_parts(target)
        except ValueError:
            problems.append(Problem(filename, _json_path(where + ["target"]), _MOUNT_TARGET_RULE))
            continue
        for other in seen:
            shorter = min(len(other), len(parts))
            if other[:shorter] == parts[:shorter]:
                problems.append(Problem(filename, _json_path(where + ["target"]),
                                        f"{target!r} is the target of another mount or overlaps it"))
                break
        seen.append(parts)
    return problems


def _jinja_problems(value: Any, filename: str, path: list) -> list[Problem]:
    if isinstance(value, str):
        if _JINJA_RE.search(value):
            return [Problem(filename, _json_path(path), "Jinja markup ({{, {% or {#) is not accepted in "
                            "configurer options: Ansible would evaluate it on the hub")]
        return []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [p for k, v in items for p in _jinja_problems(v, filename, path + [k])]


def build_catalogue(documents: list[Document], policy: CataloguePolicy = DEFAULT_POLICY,
                    check_class=spawner_class_for) -> Catalogue:
    """Merge validated documents (in order) into a Catalogue (blocking: imports spawner classes).

    Checks what one file alone cannot: template names are unique across files, each provider
    a template names has a deployment of its resource type, defaults lie within their bounds,
    placeholders are known, the spawner and configurer classes are in ``policy``'s allow-lists
    (checked before anything is imported), ``check_class`` accepts each template's spawner
    class (by default :func:`~multiplespawner.classes.spawner_class_for`: the class imports
    and is a concrete Spawner; a process that never spawns passes
    :func:`~multiplespawner.classes.locate_spawner_class`: found, not imported), configurer
    options choose no hub paths and hold no Jinja, a ``quota`` is coherent (``per: group``
    with ``access.groups``; ``queue``, ``per`` and ``queue_timeout`` with ``running``), ``mounts``
    have relative, distinct targets inside the user's home and known placeholders.
    Raises :class:`CatalogueError` listing every problem.
    """
    problems: list[Problem] = []
    deployments: dict[str, list[dict]] = {}
    seen_deployments: dict[tuple, str] = {}
    for doc in documents:
        filename = doc.filename
        for rtype, entries in doc.deployments.items():
            for i, entry in enumerate(entries):
                path = [*doc.deployments_at, rtype, i]
                key = (rtype, entry["name"])
                if key in seen_deployments:
                    problems.append(Problem(filename, _json_path(path + ["name"]),
                                            f"deployment {entry['name']!r} is already defined in {seen_deployments[key]}"))
                    continue
                seen_deployments[key] = filename
                problems += _placeholder_problems(entry, filename, path)
                deployments.setdefault(rtype, []).append(entry)

    templates: dict[str, Template] = {}
    sources: dict[str, str] = {}
    for doc in documents:
        filename = doc.filename
        for i, spec in enumerate(doc.templates):
            path = [*doc.templates_at, i]
            name = spec["name"]
            if name in templates:
                problems.append(Problem(filename, _json_path(path + ["name"]),
                                        f"template {name!r} is already defined in {sources[name]}"))
                continue
            for j, provider in enumerate(spec["providers"]):
                if not any(d["provider"] == provider for d in deployments.get(spec["resource_type"], [])):
                    problems.append(Problem(
                        filename, _json_path(path + ["providers", j]),
                        f"no {spec['resource_type']} deployment has provider {provider!r}",
                    ))
            for key, bound in spec.get("resources", {}).items():
                problems += _bound_problems(bound, filename, path + ["resources", key])
            if "lifetime_minutes" in spec:
                problems += _bound_problems(spec["lifetime_minutes"], filename, path + ["lifetime_minutes"])
            problems += _placeholder_problems(spec.get("spawner", {}), filename, path + ["spawner"])
            problems += _spawner_class_problems(spec, filename, path, policy, check_class)
            problems += _configurer_problems(spec, filename, path, policy)
            problems += _quota_problems(spec, filename, path)
            problems += _mounts_problems(spec, filename, path)
            problems += _placeholder_problems(spec.get("environment", {}), filename, path + ["environment"])
            templates[name] = Template(spec, filename)
            sources[name] = filename
    if problems:
        raise CatalogueError(problems)

    canonical = json.dumps(
        {"deployments": deployments, "templates": [t.spec for t in templates.values()]},
        sort_keys=True,
    )
    version = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    templates = {name: Template(t.spec, t.source, version) for name, t in templates.items()}
    return Catalogue(deployments, templates, version, tuple(d.filename for d in documents))


def catalogue_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and directories (their catalogue files, in name order) into a file list."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix in CATALOGUE_SUFFIXES and f.is_file())
        else:
            files.append(p)
    return files


def load_catalogue(paths: Iterable[str | os.PathLike], policy: CataloguePolicy = DEFAULT_POLICY,
                   check_class=spawner_class_for) -> Catalogue:
    """Read, validate and merge the catalogue files at ``paths`` (blocking: file reads, imports).

    Every file is parsed with :func:`read_document` and checked against ``policy``;
    ``check_class`` as for :func:`build_catalogue`. Raises :class:`CatalogueError` for a
    missing, unreadable or oversized file too.
    """
    documents = []
    problems: list[Problem] = []
    for f in catalogue_files(paths):
        try:
            documents.append(validate_document(read_document(f, policy), str(f)))
        except CatalogueError as e:
            problems += e.problems
    if problems:
        raise CatalogueError(problems)
    return build_catalogue(documents, policy, check_class)


def default_catalogue_path() -> Path:
    """The catalogue shipped in the package (a ``local`` and a ``container`` template)."""
    return Path(str(resources.files(__package__).joinpath("default_catalogue.yaml")))


# ---- live reloading -------------------------------------------------------------------------
def _fingerprint(paths: tuple[str, ...]) -> tuple:
    """What changes when a catalogue file is edited, replaced, added or removed (blocking)."""
    marks = []
    for p in paths:
        if os.path.isdir(p):
            marks.append((p, "dir", tuple(sorted(os.listdir(p)))))
    for f in catalogue_files(paths):
        try:
            st = f.stat()
        except OSError:
            marks.append((str(f), None))
        else:
            marks.append((str(f), st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(marks)


class CatalogueSource:
    """The current catalogue of a set of files, reloaded when they change.

    :meth:`get` is called on every page render and spawn. It checks the files' fingerprints
    (mtime, size, inode; directory listings) at most every ``check_interval`` seconds and,
    when they changed, reloads. Both the check and the reload run in a worker thread, and
    concurrent callers share one check, so a slow disk cannot stall the hub's event loop and
    many spawns at once cause one check, not many.

    A broken edit keeps the last good catalogue in force; the problem is logged once and
    exposed as :attr:`error` until a good edit replaces it. If the very first load fails,
    :meth:`get` raises :class:`CatalogueError`.

    ``check_class`` is passed to :func:`load_catalogue`: the hub imports spawner classes, a
    service that only reads templates finds them (``locate_spawner_class``).
    """

    def __init__(self, paths: Iterable[str | os.PathLike], log, check_interval: float = 1.0,
                 policy: CataloguePolicy = DEFAULT_POLICY, check_class=spawner_class_for):
        self.paths = tuple(str(p) for p in paths)
        self.policy = policy
        self.check_class = check_class
        self.log = log
        self.check_interval = check_interval
        self.current: Catalogue | None = None
        self.error: CatalogueError | None = None
        self._fingerprint: tuple | None = None
        self._checked_at = -float("inf")
        self._lock = asyncio.Lock()
        self.loads = 0

    async def get(self) -> Catalogue:
        """The catalogue in force now (reloaded first if a file changed)."""
        if time.monotonic() - self._checked_at >= self.check_interval or self.current is None:
            async with self._lock:
                if time.monotonic() - self._checked_at >= self.check_interval or self.current is None:
                    await asyncio.to_thread(self._refresh)
        if self.current is None:
            raise self.error
        return self.current

    def _refresh(self) -> None:
        """Reload if the files changed (runs in a worker thread)."""
        fingerprint = _fingerprint(self.paths)
        self._checked_at = time.monotonic()
        if fingerprint == self._fingerprint and self.current is not None:
            return
        self._fingerprint = fingerprint
        try:
            catalogue = load_catalogue(self.paths, self.policy, self.check_class)
        except CatalogueError as e:
            CATALOGUE_RELOAD_ERRORS.inc()
            if self.error is None or str(e) != str(self.error):
                kept = f"keeping version {self.current.version}" if self.current else "no catalogue loaded yet"
                self.log.error("Template catalogue has errors (%s):\n%s", kept, e)
            self.error = e
            return
        self.loads += 1
        if self.current is None or catalogue.version != self.current.version:
            self.log.info("Template catalogue version %s loaded from %s (%d templates)",
                          catalogue.version, ", ".join(self.paths), len(catalogue.templates))
        self.current, self.error = catalogue, None


_SOURCES: dict[tuple, CatalogueSource] = {}


def shared_source(paths: Iterable[str | os.PathLike], log, check_interval: float = 1.0,
                  policy: CataloguePolicy = DEFAULT_POLICY) -> CatalogueSource:
    """One :class:`CatalogueSource` per set of paths (and policy) for the whole hub process.

    Every user's spawner asks the same source, so a change is read once.
    """
    key = (tuple(str(p) for p in paths), check_interval, policy)
    source = _SOURCES.get(key)
    if source is None:
        source = _SOURCES[key] = CatalogueSource(key[0], log, check_interval, policy)
    return source
