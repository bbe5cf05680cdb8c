"""Turn a user's request (form fields or REST ``user_options``) into a checked :class:`Choice`.

The spawn form and the REST API share :func:`resolve_choice`: whatever comes in, the result
is either a :class:`Choice` that names an enabled template this user may use, a provider of
it, and resources and a session length within the template's bounds, or a
:class:`~multiplespawner.errors.SpawnError` 400 (a JupyterHub ``SpawnException``, which is a
``tornado.web.HTTPError``) with a message that says what to change.

``user_options`` keys (all optional except where a choice is ambiguous):

=================== ==================================================================
``template``        template name; default: the first template this user may use
``provider``        one of the template's providers; default: its first
``cpu``             CPU cores (number)
``memory_mb``       memory in MiB (integer)
``gpus``            GPUs (integer)
``lifetime_minutes`` session length in minutes (number)
=================== ==================================================================

Numbers may come as JSON numbers or as text (the form's fields); they must be finite and at
most ``2**53`` in size, and text at most 32 characters; null or empty text means "the default".
Bools, lists and objects are not numbers. Values quoted back in messages are cut short
(:func:`shown`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from .catalogue import NUMBER_KEYS, RESOURCE_KEYS, Bound, Catalogue, Template, is_number
from .errors import refused

INTEGER_KEYS = ("memory_mb", "gpus")
OPTION_KEYS = ("template", "provider", *NUMBER_KEYS)


@dataclass(frozen=True)
class Choice:
    """A validated choice. ``resources`` holds only what the template offers."""

    template: Template
    provider: str
    deployment: dict
    resources: dict[str, float]
    lifetime_minutes: float | None

    def to_options(self) -> dict:
        """The canonical ``user_options`` for this choice (what the hub stores)."""
        options: dict[str, Any] = {"template": self.template.name, "provider": self.provider}
        options.update(self.resources)
        if self.lifetime_minutes is not None:
            options["lifetime_minutes"] = self.lifetime_minutes
        return options


#: Longest text a number may be written as; ``-`` and 15 significant digits fit easily.
_MAX_NUMBER_TEXT = 32
#: Largest magnitude a number may have: beyond it floats lose whole numbers (2**53).
#: Longest repr of a user's value quoted back in a message.
_MAX_SHOWN = 60


def shown(value: Any) -> str:
    """``repr(value)``, cut to a bounded length, for quoting a user's input in a message."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _number(key: str, value: Any, template: Template) -> float:
    """Coerce a form string or JSON number; refuse anything else with a clear message.

    Refused: bools, NaN and infinities, numbers beyond ``±2**53``, text longer than
    ``_MAX_NUMBER_TEXT`` characters, lists, objects (null never gets here: it means the default).
    """
    if isinstance(value, list) and len(value) == 1:  # raw form data
        value = value[0]
    if isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_NUMBER_TEXT:
            raise refused(f"{key} must be a number of at most {_MAX_NUMBER_TEXT} characters")
        try:
            value = float(text)
        except ValueError:
            raise refused(f"{key} must be a number, not {shown(value)}") from None
    if not is_number(value):
        raise refused(f"{key} must be a number (finite, at most 2**53 in size), not {shown(value)}")
    if key in INTEGER_KEYS:
        if value != int(value):
            raise refused(f"{key} must be a whole number, not {shown(value)}")
        return int(value)
    return int(value) if float(value).is_integer() else float(value)


def _within(key: str, raw: Any, bound: Bound, template: Template) -> float:
    """The value asked for (the default if none), refused unless ``bound.min <= value <= bound.max``.

    The spawn form's number inputs carry the same ``min``/``max`` (see ``form.py``).
    """
    value = bound.default if raw in (None, "", [""]) else _number(key, raw, template)
    if not bound.min <= value <= bound.max:
        raise refused(
            f"{key} {_fmt(value)} is outside {_fmt(bound.min)}..{_fmt(bound.max)} "
            f"allowed by template {template.name!r}."
        )
    return value


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def resolve_choice(
    catalogue: Catalogue,
    user_options: dict | None,
    *,
    user_name: str,
    groups: Iterable[str],
    admin: bool,
    unavailable: dict[str, str] | None = None,
) -> Choice:
    """Check ``user_options`` for this user against ``catalogue``; return the :class:`Choice`.

    ``unavailable`` maps template names whose prerequisites are missing to the reason.
    Raises a 400 :class:`~multiplespawner.errors.SpawnError` naming the problem: unknown option key, unknown, disabled,
    forbidden or unavailable template, unknown provider, resource or lifetime out of bounds.
    """
    if user_options is not None and not isinstance(user_options, dict):
        raise refused(f"user_options must be an object, not {type(user_options).__name__}")
    options = dict(user_options or {})
    unavailable = unavailable or {}
    unknown = sorted(map(str, set(options) - set(OPTION_KEYS)))
    if unknown:
        named = ", ".join(shown(k) for k in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise refused(f"Unknown option(s) {named}; allowed: {', '.join(OPTION_KEYS)}")
    groups = list(groups)

    name = options.get("template")
    if name is None:
        usable = [t for t in catalogue.usable_by(user_name, groups, admin) if t.name not in unavailable]
        if not usable:
            raise refused("There is no template you may use; ask the hub's administrators.")
        template = usable[0]
    else:
        if not isinstance(name, str):
            raise refused(f"template must be a template name, not {shown(name)}")
        template = catalogue.templates.get(name)
        if template is None:
            raise refused(f"There is no template named {shown(name)}.")
        if not template.enabled:
            raise refused(f"Template {name!r} is disabled.")
        if not template.allows(user_name, groups, admin):
            raise refused(f"You may not use template {name!r}.")
        if name in unavailable:
            raise refused(f"Template {name!r} is not available right now: {unavailable[name]}")

    provider = options.get("provider", template.providers[0])
    if provider not in template.providers:
        raise refused(
            f"Template {template.name!r} does not run on provider {shown(provider)}; "
            f"choose one of {', '.join(template.providers)}."
        )
    deployment = catalogue.deployment(template, provider)

    chosen: dict[str, float] = {}
    for key in NUMBER_KEYS:
        bound = template.lifetime if key == "lifetime_minutes" else template.resources.get(key)
        raw = options.get(key)
        if bound is not None:
            chosen[key] = _within(key, raw, bound, template)
        elif raw not in (None, ""):
            what = "session length" if key == "lifetime_minutes" else key
            raise refused(f"Template {template.name!r} has no {what} choice.")
    lifetime = chosen.pop("lifetime_minutes", None)
    return Choice(template, provider, deployment, chosen, lifetime)
