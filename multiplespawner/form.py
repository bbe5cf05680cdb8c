"""The spawn form: provider -> resource type -> template -> resources -> session length.

:func:`render_form` writes the fields JupyterHub's spawn page wraps in its ``<form>``
(Bootstrap 5 classes, as the hub's own pages use). Only the templates the user may use are
listed. Each template has its own fieldset of resource inputs named ``<template>.<key>``;
a few lines of script show the fieldset of the selected template and filter templates by the
chosen provider and resource type. Without script every field is shown and the server still
checks everything, against the same bounds the inputs' ``min``/``max`` carry (the template's).
The last choice of the server preselects its provider, resource type, template and values.
:func:`options_from_form` turns the posted fields into ``user_options``.
"""

from __future__ import annotations

import json
from html import escape

from .catalogue import Bound, Template
from .choices import NUMBER_KEYS, RESOURCE_KEYS, is_number

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

_SCRIPT = """
<script>
(function () {
  const root = document.getElementById("multiplespawner-form");
  if (!root) return;
  const provider = root.querySelector("#ms-provider");
  const rtype = root.querySelector("#ms-resource-type");
  const radios = Array.from(root.querySelectorAll("input[name=template]"));
  function sync() {
    let firstVisible = null, checkedVisible = false;
    for (const radio of radios) {
      const item = radio.closest(".ms-template");
      const providers = JSON.parse(item.dataset.providers);
      const show = (!provider.value || providers.includes(provider.value)) &&
                   (!rtype.value || item.dataset.resourceType === rtype.value);
      item.hidden = !show;
      if (show && !firstVisible) firstVisible = radio;
      if (show && radio.checked) checkedVisible = true;
    }
    if (!checkedVisible && firstVisible) firstVisible.checked = true;
    for (const radio of radios) {
      const fields = root.querySelector(`[data-fields-for="${CSS.escape(radio.value)}"]`);
      if (!fields) continue;
      const on = radio.checked && !radio.closest(".ms-template").hidden;
      fields.hidden = !on;
      fields.disabled = !on;
    }
  }
  provider.addEventListener("change", sync);
  rtype.addEventListener("change", sync);
  radios.forEach((r) => r.addEventListener("change", sync));
  sync();
})();
</script>
"""


def _fmt(x) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _select(id_: str, name: str, label: str, values: list[tuple[str, str]], selected: str) -> str:
    options = ['<option value="">Any</option>'] + [
        f'<option value="{escape(v)}"{" selected" if v == selected else ""}>{escape(text)}</option>'
        for v, text in values
    ]
    return (
        f'<div class="mb-3"><label class="form-label" for="{id_}">{label}</label>'
        f'<select class="form-select" id="{id_}" name="{name}">{"".join(options)}</select></div>'
    )


def _number_input(t: Template, key: str, label: str, bound: Bound, value, step: str) -> str:
    """One number input whose ``min``/``max`` are the bounds the server checks (choices.py)."""
    field_id = f"{escape(t.name)}-{key}"
    return (
        f'<div class="col-sm-4"><label class="form-label" for="{field_id}">{label} '
        f'<small class="text-muted">({_fmt(bound.min)}&ndash;{_fmt(bound.max)})</small></label>'
        f'<input class="form-control" type="number" id="{field_id}" '
        f'name="{escape(t.name)}.{key}" value="{escape(_fmt(value))}" min="{_fmt(bound.min)}" '
        f'max="{_fmt(bound.max)}" step="{step}"></div>'
    )


def _template_fields(t: Template, last: dict) -> str:
    rows = []
    same = last.get("template") == t.name
    fields = [(key, *_LABELS[key], t.resources.get(key)) for key in RESOURCE_KEYS]
    fields.append(("lifetime_minutes", "Session length (minutes)", "any", t.lifetime))
    for key, label, step, bound in fields:
        if bound is not None:
            value = last.get(key, bound.default) if same else bound.default
            rows.append(_number_input(t, key, label, bound, value, step))
    if not rows:
        return ""
    return (
        f'<fieldset class="row g-3 mb-3" data-fields-for="{escape(t.name)}">'
        f'<legend class="fs-6">Resources for {escape(t.display_name)}</legend>{"".join(rows)}</fieldset>'
    )


def _usable_last(last) -> dict:
    """The parts of a server's stored ``user_options`` that can preselect fields.

    They are normally the canonical options of the last spawn, but the hub's REST API lets
    their owner overwrite them with any object (``PATCH .../servers/NAME``): names that are
    not strings and numbers that :func:`~multiplespawner.choices.is_number` refuses are dropped,
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
) -> str:
    """HTML for the spawn page.

    ``templates``: those this user may use; ``last``: the previous ``user_options`` (preselected);
    ``unavailable``: template name -> why it cannot run now (shown disabled, with the reason);
    ``admin_error``: a catalogue problem to show (pass it only for admins).
    """
    last = _usable_last(last)
    unavailable = unavailable or {}
    parts = ['<div id="multiplespawner-form">']
    if admin_error:
        parts.append(
            '<div class="alert alert-warning" role="alert" id="ms-catalogue-error">'
            "<strong>The template catalogue has errors; the last good version stays in force.</strong>"
            f'<pre class="mb-0 mt-2">{escape(admin_error)}</pre></div>'
        )
    if not templates:
        parts.append('<p class="alert alert-info">There is no template you may use. '
                     "Ask the hub's administrators.</p></div>")
        return "".join(parts)

    available = [t for t in templates if t.name not in unavailable]
    chosen = last.get("template")
    if chosen not in {t.name for t in available}:
        chosen = available[0].name if available else None
    providers = sorted({p for t in templates for p in t.providers})
    rtypes = [r for r in _RESOURCE_TYPE_LABELS if any(t.resource_type == r for t in templates)]
    parts.append('<div class="row"><div class="col-sm-6">')
    # the last choice preselects its provider and resource type too (if still usable)
    last_template = next((t for t in available if t.name == last.get("template")), None)
    parts.append(_select("ms-provider", "provider", "Provider", [(p, p) for p in providers],
                         last.get("provider", "") if last_template else ""))
    parts.append('</div><div class="col-sm-6">')
    parts.append(_select("ms-resource-type", "resource_type", "Resource type",
                         [(r, _RESOURCE_TYPE_LABELS[r]) for r in rtypes],
                         last_template.resource_type if last_template else ""))
    parts.append('</div></div><div class="mb-3"><span class="form-label d-block">Template</span>')
    for t in templates:
        reason = unavailable.get(t.name)
        attrs = " checked" if t.name == chosen else ""
        attrs += " disabled" if reason else ""
        note = f'<div class="text-warning small">Not available now: {escape(reason)}</div>' if reason else ""
        parts.append(
            f'<div class="form-check ms-template" data-providers="{escape(json.dumps(t.providers))}" '
            f'data-resource-type="{escape(t.resource_type)}">'
            f'<input class="form-check-input" type="radio" name="template" id="ms-t-{escape(t.name)}" '
            f'value="{escape(t.name)}"{attrs}>'
            f'<label class="form-check-label" for="ms-t-{escape(t.name)}"><strong>{escape(t.display_name)}</strong>'
            f' <span class="badge text-bg-light">{escape(_RESOURCE_TYPE_LABELS[t.resource_type])}</span>'
            f'<div class="text-muted small">{escape(t.description)}</div>{note}</label></div>'
        )
    parts.append("</div>")
    parts.extend(_template_fields(t, last) for t in templates if t.name not in unavailable)
    parts.append("</div>")
    parts.append(_SCRIPT)
    return "".join(parts)


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
