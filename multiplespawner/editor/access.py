"""Who may change which template, and which fields of it, from JupyterHub RBAC scopes.

``custom:templates:edit`` lets its holder change every template and every field (the classes
still come from the operator's allow-lists, which the catalogue enforces for everyone).

``custom:templates:edit!group=G`` makes a *course editor* of the templates tagged ``G``
(``tags: [G]``). A course editor may change only what a course admin should, field by field:

=====================  ====================================================================
``display_name``,      freely
``description``,
``enabled``
``tags``               only tags of their own groups, and one of them must stay
``access``             ``groups``: add or remove only groups they hold; ``users``: unchanged;
                       ``admin_only``: freely; a template may not become open to everyone
``resources``          each bound at most the operator's limit (:class:`CourseRules`); a bound
                       the template had may not be removed
``lifetime_minutes``   at most the operator's limit
``environment``        entries whose names match the operator's pattern
``spawner.kwargs``     only ``image``, and only to an image on the operator's list
``quota``              tightened only: ``running`` and ``per_user`` lowered, a quota added,
                       ``per: group`` turned into ``per: template``; ``queue`` and
                       ``queue_timeout`` freely. Never removed or raised.
everything else        (``spawner.class``, other kwargs, ``configurer``, ``authenticator``,
                       ``resource_type``, ``providers``, ``requires``, ``mounts``): unscoped
                       editors only
=====================  ====================================================================

A course editor creates a template as a copy of one of theirs: its ``resource_type``,
``providers``, ``requires``, ``spawner``, ``configurer``, ``authenticator`` and ``mounts`` must equal those
of a template they may edit, and every other field is checked as a change from that template's
``access`` and ``quota`` (and from nothing else); a template with a ``quota`` cannot be copied
by a course editor, since each template's places are its own and a copy would add places.
A course editor may delete a template of theirs.
:meth:`Editor.refusals` lists every refused field with the permission it needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

EDIT_SCOPE = "custom:templates:edit"
_GROUP_FILTER = f"{EDIT_SCOPE}!group="

#: fields a course editor may change without further checks
_FREE_FIELDS = ("name", "display_name", "description", "enabled")
#: fields only unrestricted editors may change; a course editor's new template copies them
_COPIED_FIELDS = ("resource_type", "providers", "requires", "spawner", "configurer", "authenticator", "mounts")


@dataclass(frozen=True)
class CourseRules:
    """The operator's bounds for course editors (the editor service's ``course_editor_*`` traits).

    ``max_resources`` maps a resource (``cpu``, ``memory_mb``, ``gpus``) to the largest
    default/min/max a course editor may set; a resource not listed may not be set by them.
    ``environment_pattern`` is matched against the whole variable name.
    """

    max_resources: dict = field(default_factory=lambda: {"cpu": 4, "memory_mb": 4096, "gpus": 0})
    max_lifetime_minutes: float = 720
    images: tuple = ()
    environment_pattern: str = r"COURSE_[A-Z0-9_]+"


@dataclass(frozen=True)
class Editor:
    """A person allowed to edit templates: everything, or templates with some tags."""

    name: str
    everything: bool
    tags: frozenset

    @property
    def scope(self) -> str:
        """The permission this editor holds, as granted (for messages)."""
        if self.everything:
            return EDIT_SCOPE
        return ", ".join(_GROUP_FILTER + t for t in sorted(self.tags))

    def may_edit(self, spec: dict | None) -> bool:
        """May this editor change (or delete) the template ``spec`` as it is now?"""
        if self.everything:
            return True
        return isinstance(spec, dict) and bool(self.tags & set(_strings(spec.get("tags"))))

    def refusals(self, before: dict | None, after: dict | None, rules: CourseRules,
                 existing=()) -> list[str]:
        """Why this editor may not turn ``before`` into ``after``: one message per refused
        field naming the permission it needs (empty: allowed).

        ``before`` None is a creation (checked against the template of ``existing``, the
        catalogue's templates, that it copies), ``after`` None a deletion. ``after`` need not
        be valid: malformed values are refused here as changes, never raise.
        """
        if self.everything:
            return []
        mine = ", ".join(sorted(self.tags))
        if before is not None and not self.may_edit(before):
            return [f"you may only edit templates tagged with one of your courses ({mine})"]
        if after is None:
            return []
        if not self.may_edit(after):
            return [f"tags: the template must keep a tag of one of your courses ({mine})"]
        old = before if before is not None else self._copied(after, existing)
        problems = [] if old is not None else [
            f"a course editor creates a template as a copy of one of theirs: {', '.join(_COPIED_FIELDS)} "
            f"must equal those of a template tagged {mine}; anything else needs the unrestricted "
            f"{EDIT_SCOPE} permission"]
        if before is None and old is not None and "quota" in old:
            problems.append(f"quota: a copy of a template with a quota would add places; creating it needs "
                            f"the unrestricted {EDIT_SCOPE} permission")
        old = old or {}
        for key in sorted(set(old) | set(after), key=str):
            if key in _FREE_FIELDS or old.get(key) == after.get(key):
                continue
            check = _FIELD_CHECKS.get(key)
            reason = check(self, old.get(key), after.get(key), rules) if check else _UNSCOPED
            if reason:
                problems.append(f"{key}: {reason}")
        return problems

    def _copied(self, after: dict, existing) -> dict | None:
        """The fields a new template takes from the template of ``existing`` it copies."""
        for spec in existing:
            if self.may_edit(spec) and all(spec.get(k) == after.get(k) for k in _COPIED_FIELDS):
                return {k: spec[k] for k in (*_COPIED_FIELDS, "access", "quota") if k in spec}
        return None


_UNSCOPED = f"changing it needs the unrestricted {EDIT_SCOPE} permission"


def _strings(value) -> list:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _tags(editor: Editor, old, new, rules: CourseRules) -> str | None:
    changed = set(_strings(old)) ^ set(_strings(new))
    foreign = sorted(changed - editor.tags)
    if foreign:
        return f"adding or removing {', '.join(foreign)} needs {_GROUP_FILTER}<tag> for those tags"
    return None


def _access(editor: Editor, old, new, rules: CourseRules) -> str | None:
    old, new = old or {}, {} if new is None else new
    if not isinstance(new, dict):
        return "must be a mapping"
    if not isinstance(old, dict):
        old = {}
    if old.get("users", []) != new.get("users", []):
        return f"changing 'users' needs the unrestricted {EDIT_SCOPE} permission"
    foreign = sorted((set(_strings(old.get("groups"))) ^ set(_strings(new.get("groups")))) - editor.tags)
    if foreign or not isinstance(new.get("groups", []), list):
        return (f"you may add or remove only groups you hold ({', '.join(sorted(editor.tags))}); "
                f"{', '.join(foreign) or 'groups'} needs {_GROUP_FILTER}<group> for those groups")
    open_before = not (old.get("groups") or old.get("users") or old.get("admin_only"))
    open_after = not (new.get("groups") or new.get("users") or new.get("admin_only"))
    if open_after and not open_before:
        return f"opening a template to everyone needs the unrestricted {EDIT_SCOPE} permission"
    return None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bound_over(spec, limit: float) -> bool:
    """Does a bound ``{default, min, max}`` go over ``limit`` (or is it not a bound at all)?"""
    if not isinstance(spec, dict):
        return True
    return any(not _number(v) or v > limit for v in spec.values())


def _resources(editor: Editor, old, new, rules: CourseRules) -> str | None:
    old = old if isinstance(old, dict) else {}
    new = new if new is not None else {}
    if not isinstance(new, dict):
        return "must be a mapping"
    removed = sorted(set(old) - set(new))
    if removed:
        return f"removing the {', '.join(removed)} bound needs the unrestricted {EDIT_SCOPE} permission"
    for name, spec in new.items():
        if spec == old.get(name):
            continue
        if name not in rules.max_resources:
            return f"{name} is not among the resources the operator lets course editors set"
        if _bound_over(spec, rules.max_resources[name]):
            return (f"{name} may be at most {rules.max_resources[name]} for course editors "
                    f"(the operator's course_editor_max_resources); more needs the unrestricted "
                    f"{EDIT_SCOPE} permission")
    return None


def _lifetime(editor: Editor, old, new, rules: CourseRules) -> str | None:
    if new is None:
        return f"removing the session lifetime needs the unrestricted {EDIT_SCOPE} permission"
    if _bound_over(new, rules.max_lifetime_minutes):
        return (f"may be at most {rules.max_lifetime_minutes:g} minutes for course editors (the operator's "
                f"course_editor_max_lifetime_minutes); more needs the unrestricted {EDIT_SCOPE} permission")
    return None


def _environment(editor: Editor, old, new, rules: CourseRules) -> str | None:
    old = old if isinstance(old, dict) else {}
    new = new if new is not None else {}
    if not isinstance(new, dict):
        return "must be a mapping"
    pattern = re.compile(rules.environment_pattern)
    changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    refused = sorted(str(k) for k in changed if not pattern.fullmatch(str(k)))
    if refused:
        return (f"{', '.join(refused)}: course editors may set only variables matching "
                f"{rules.environment_pattern} (the operator's course_editor_environment_pattern); "
                f"others need the unrestricted {EDIT_SCOPE} permission")
    return None


def _spawner(editor: Editor, old, new, rules: CourseRules) -> str | None:
    old = old if isinstance(old, dict) else {}
    if not isinstance(new, dict) or old.get("class") != new.get("class"):
        return f"changing spawner.class needs the unrestricted {EDIT_SCOPE} permission"
    if set(old) - {"class", "kwargs"} != set(new) - {"class", "kwargs"}:
        return _UNSCOPED
    old_kwargs = old.get("kwargs") if isinstance(old.get("kwargs"), dict) else {}
    new_kwargs = new.get("kwargs") if isinstance(new.get("kwargs"), dict) else None
    if new_kwargs is None:
        return f"changing spawner.kwargs needs the unrestricted {EDIT_SCOPE} permission"
    changed = sorted(str(k) for k in set(old_kwargs) | set(new_kwargs) if old_kwargs.get(k) != new_kwargs.get(k))
    if not changed:
        return None
    if changed != ["image"]:
        others = ", ".join(f"spawner.kwargs.{k}" for k in changed if k != "image")
        return f"changing {others} needs the unrestricted {EDIT_SCOPE} permission"
    if new_kwargs.get("image") not in rules.images:
        return (f"spawner.kwargs.image {new_kwargs.get('image')!r} is not on the operator's list of images "
                f"for course editors (course_editor_images); other images need the unrestricted "
                f"{EDIT_SCOPE} permission")
    return None


def _quota(editor: Editor, old, new, rules: CourseRules) -> str | None:
    """A course editor may tighten a quota, never loosen it (see the module's table)."""
    loosen = f"raising or removing a quota needs the unrestricted {EDIT_SCOPE} permission"
    if new is None:
        return loosen
    if not isinstance(new, dict):
        return "must be a mapping"
    if not isinstance(old, dict):
        return None  # a new quota only restricts
    if old.get("per", "template") == "template" and new.get("per", "template") != "template":
        return f"per: group gives every group its own places; {loosen}"
    for key in ("running", "per_user"):
        if key in old and not (_number(new.get(key)) and new[key] <= old[key]):
            return f"{key} may only be lowered (from {old[key]}); {loosen}"
    return None


_FIELD_CHECKS = {
    "tags": _tags,
    "access": _access,
    "resources": _resources,
    "lifetime_minutes": _lifetime,
    "environment": _environment,
    "spawner": _spawner,
    "quota": _quota,
}


def editor_from_scopes(name: str, scopes) -> Editor | None:
    """The :class:`Editor` a token's expanded scopes make of ``name``, or None."""
    scopes = set(scopes or ())
    if EDIT_SCOPE in scopes:
        return Editor(name, True, frozenset())
    tags = frozenset(s[len(_GROUP_FILTER):] for s in scopes if s.startswith(_GROUP_FILTER))
    return Editor(name, False, tags) if tags else None
