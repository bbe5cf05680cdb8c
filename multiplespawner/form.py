"""The spawn form: provider -> resource type -> template -> resources -> session length.

:func:`render_form` writes the fields JupyterHub's spawn page wraps in its ``<form>``
(Bootstrap 5 classes, as the hub's own pages use) from a Jinja template an operator can replace
(``c.MultipleSpawner.options_form_template``; default ``templates/spawn_form.html``). Only the templates the user may use are
listed. Each template has its own fieldset of resource inputs named ``<template>.<key>``;
a few lines of script show the fieldset of the selected template and filter templates by the
chosen provider and resource type. Without script every field is shown and the server still
checks everything, against the same bounds the inputs' ``min``/``max`` carry (the template's).
The last choice of the server preselects its provider, resource type, template and values.
:func:`options_from_form` turns the posted fields into ``user_options``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from html import escape
from importlib import resources

import jinja2
from markupsafe import Markup

from .catalogue import NUMBER_KEYS, RESOURCE_KEYS, Bound, Template, is_number

_LABELS = {
    "cpu": ("CPU cores", "any"),
    "memory_mb": ("Memory (MiB)", "1"),
    "gpus": ("GPUs", "1"),
}
_RESOURCE_TYPE_LABELS = {
    "local": "Process on the hub's machine",
    "container": "Container",
    "virtual_machine": "Virtual machine",
    "bare_metal": "Bare-metal machine",
    "batch": "Batch job",
}

#: the packaged spawn form (a Jinja template; ``c.MultipleSpawner.options_form_template``
#: replaces it)
FORM_TEMPLATE_FILE = "templates/spawn_form.html"


@lru_cache(maxsize=1)
def default_form_template() -> str:
    """The text of the packaged spawn form template."""
    return resources.files(__package__).joinpath(FORM_TEMPLATE_FILE).read_text()


def _escaped(value) -> Markup:
    """Every value a template prints, escaped as :func:`html.escape` does (quotes too)."""
    return value if isinstance(value, Markup) else Markup(escape(str(value)))


@lru_cache(maxsize=8)
def _compiled(template_text: str) -> jinja2.Template:
    env = jinja2.Environment(autoescape=True, finalize=_escaped, undefined=jinja2.StrictUndefined)
    env.filters["json"] = json.dumps  # a plain string: printed escaped, fit for an attribute
    return env.from_string(template_text)


def _fmt(x) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _fields(t: Template, last: dict) -> list[dict]:
    """The template's number inputs; ``min``/``max`` are the bounds the server checks (choices.py)."""
    same = last.get("template") == t.name
    specs = [(key, *_LABELS[key], t.resources.get(key)) for key in RESOURCE_KEYS]
    specs.append(("lifetime_minutes", "Session length (minutes)", "any", t.lifetime))
    fields = []
    for key, label, step, bound in specs:
        if bound is not None:
            value = last.get(key, bound.default) if same else bound.default
            fields.append({"key": key, "label": label, "step": step, "min": _fmt(bound.min),
                           "max": _fmt(bound.max), "value": _fmt(value)})
    return fields


def form_context(
    templates: list[Template],
    last: dict | None = None,
    unavailable: dict[str, str] | None = None,
    admin_error: str | None = None,
    notice: str | None = None,
) -> dict:
    """The variables the spawn form template gets (see :func:`render_form`): plain data, so an
    operator's template can lay them out as it likes."""
    last = _usable_last(last)
    unavailable = unavailable or {}
    available = [t for t in templates if t.name not in unavailable]
    chosen = last.get("template")
    if chosen not in {t.name for t in available}:
        chosen = available[0].name if available else None
    # the last choice preselects its provider and resource type too (if still usable)
    last_template = next((t for t in available if t.name == last.get("template")), None)
    provider = last.get("provider", "") if last_template else ""
    rtype = last_template.resource_type if last_template else ""
    providers = sorted({p for t in templates for p in t.providers})
    rtypes = [r for r in _RESOURCE_TYPE_LABELS if any(t.resource_type == r for t in templates)]
    return {
        "admin_error": admin_error,
        "notice": notice,
        "providers": [{"value": p, "text": p, "selected": p == provider} for p in providers],
        "resource_types": [{"value": r, "text": _RESOURCE_TYPE_LABELS[r], "selected": r == rtype} for r in rtypes],
        "templates": [
            {
                "name": t.name, "display_name": t.display_name, "description": t.description,
                "resource_type": t.resource_type, "resource_type_label": _RESOURCE_TYPE_LABELS[t.resource_type],
                "providers": list(t.providers), "checked": t.name == chosen, "reason": unavailable.get(t.name),
                "fields": _fields(t, last),
            }
            for t in templates
        ],
    }


def _usable_last(last) -> dict:
    """The parts of a server's stored ``user_options`` that can preselect fields.

    They are normally the canonical options of the last spawn, but the hub's REST API lets
    their owner overwrite them with any object (``PATCH .../servers/NAME``): names that are
    not strings and numbers that :func:`~multiplespawner.catalogue.is_number` refuses are dropped,
    so the form shows the defaults there instead of failing.
    """
    if not isinstance(last, dict):
        return {}
    kept = {k: last[k] for k in ("template", "provider") if isinstance(last.get(k), str)}
    kept.update((k, v) for k, v in last.items() if k in NUMBER_KEYS and is_number(v))
    return kept


def render_form(
    templates: list[Template],
    last: dict | None = None,
    unavailable: dict[str, str] | None = None,
    admin_error: str | None = None,
    template_text: str | None = None,
    notice: str | None = None,
) -> str:
    """HTML for the spawn page.

    ``templates``: those this user may use; ``last``: the previous ``user_options`` (preselected);
    ``unavailable``: template name -> why it cannot run now (shown disabled, with the reason);
    ``admin_error``: a catalogue problem to show (pass it only for admins); ``notice``: a message
    for this user about their last spawn (e.g. a place in line lost to a hub restart); ``template_text``:
    the Jinja form template (default: the packaged one, :func:`default_form_template`), rendered
    with autoescaping and the variables of :func:`form_context`.
    """
    text = default_form_template() if template_text is None else template_text
    return _compiled(text).render(form_context(templates, last, unavailable, admin_error, notice))


def options_from_form(formdata: dict[str, list[str]]) -> dict:
    """``user_options`` from posted form fields (checked later by ``resolve_choice``).

    Keeps ``template``, ``provider`` (when one is chosen) and the chosen template's
    ``<template>.<key>`` fields as ``key``; fields of other templates are ignored.
    """
    def first(key):
        values = formdata.get(key) or [""]
        return values[0].strip()

    template = first("template")
    options: dict = {}
    if template:
        options["template"] = template
    if first("provider"):
        options["provider"] = first("provider")
    for key in NUMBER_KEYS:
        value = first(f"{template}.{key}") if template else ""
        if value:
            options[key] = value
    return options
