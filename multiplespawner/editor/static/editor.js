// Template editor page: talks to the service's REST API (same origin, hub OAuth cookie).
"use strict";

const prefix = document.body.dataset.prefix;
const xsrf = document.body.dataset.xsrf;
const $ = (id) => document.getElementById(id);
let current = null; // {name, etag, spec, yaml} being edited; name null for a new template
let view = "form";

async function api(method, path, body, contentType, etag) {
  const headers = { "X-XSRFToken": xsrf };
  if (body !== undefined) headers["Content-Type"] = contentType || "application/json";
  if (etag) headers["If-Match"] = `"${etag}"`;
  const response = await fetch(`${prefix}api/${path}`, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : (typeof body === "string" ? body : JSON.stringify(body)),
  });
  const text = await response.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch (e) { data = { html: text }; }
  return { ok: response.ok, status: response.status, data };
}

function say(text, kind) {
  const box = $("message");
  box.className = `alert alert-${kind || "info"}`;
  box.textContent = text;
}

function showProblems(data) {
  const list = $("problems");
  list.replaceChildren();
  const lines = (data && data.problems && data.problems.length) ? data.problems : (data && data.message ? [data.message] : []);
  for (const line of lines) {
    const li = document.createElement("li");
    li.textContent = line;
    list.appendChild(li);
  }
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  return td;
}

async function loadTable() {
  const { ok, data } = await api("GET", "templates");
  if (!ok) { say(data.message || "could not list templates", "danger"); return; }
  const body = document.querySelector("#template-table tbody");
  body.replaceChildren();
  for (const t of data.templates) {
    const s = t.spec;
    const tr = document.createElement("tr");
    tr.dataset.template = t.name;
    const mem = (s.resources || {}).memory_mb;
    tr.append(cell(t.name), cell(s.display_name || ""), cell(s.resource_type),
      cell(((s.access || {}).groups || []).join(", ") || "everyone"), cell((s.tags || []).join(", ")),
      cell(mem ? `${mem.default} (max ${mem.max ?? mem.default})` : ""), cell(s.enabled === false ? "no" : "yes"));
    const actions = document.createElement("td");
    if (t.editable) {
      const edit = document.createElement("button");
      edit.className = "btn btn-sm btn-outline-primary edit";
      edit.textContent = "Edit";
      edit.onclick = () => openEditor(t.name);
      const toggle = document.createElement("button");
      toggle.className = "btn btn-sm btn-outline-secondary ms-1 toggle";
      toggle.textContent = s.enabled === false ? "Enable" : "Disable";
      toggle.onclick = () => save(t.name, { ...s, enabled: s.enabled === false }, t.etag);
      actions.append(edit, toggle);
    }
    tr.appendChild(actions);
    body.appendChild(tr);
  }
}

function setView(which) {
  view = which;
  $("tab-form").classList.toggle("active", which === "form");
  $("tab-yaml").classList.toggle("active", which === "yaml");
  $("form-view").classList.toggle("d-none", which !== "form");
  $("yaml-view").classList.toggle("d-none", which !== "yaml");
}

function fill(spec) {
  const res = spec.resources || {};
  const mem = res.memory_mb || {};
  const cpu = res.cpu || {};
  $("field-display_name").value = spec.display_name || "";
  $("field-description").value = spec.description || "";
  $("field-access-groups").value = ((spec.access || {}).groups || []).join(", ");
  $("field-tags").value = (spec.tags || []).join(", ");
  $("field-memory_mb-default").value = mem.default ?? "";
  $("field-memory_mb-min").value = mem.min ?? "";
  $("field-memory_mb-max").value = mem.max ?? "";
  $("field-cpu-default").value = cpu.default ?? "";
  $("field-cpu-max").value = cpu.max ?? "";
  $("field-lifetime-max").value = (spec.lifetime_minutes || {}).max ?? "";
  $("field-quota-running").value = (spec.quota || {}).running ?? "";
  $("field-quota-queue").checked = (spec.quota || {}).queue === true;
  $("field-enabled").checked = spec.enabled !== false;
}

function list(value) {
  return value.split(",").map((s) => s.trim()).filter(Boolean);
}

function setOrDrop(obj, key, value) {
  if (value === "" || value === undefined || value === null || (Array.isArray(value) && !value.length)) delete obj[key];
  else obj[key] = value;
}

function bound(old, fields) {
  const out = { ...(old || {}) };
  for (const [key, id] of Object.entries(fields)) {
    const raw = $(id).value;
    setOrDrop(out, key, raw === "" ? "" : Number(raw));
  }
  return Object.keys(out).length ? out : null;
}

function specFromForm() {
  const spec = JSON.parse(JSON.stringify(current.spec));
  setOrDrop(spec, "display_name", $("field-display_name").value.trim());
  setOrDrop(spec, "description", $("field-description").value.trim());
  const access = { ...(spec.access || {}) };
  setOrDrop(access, "groups", list($("field-access-groups").value));
  setOrDrop(spec, "access", Object.keys(access).length ? access : "");
  setOrDrop(spec, "tags", list($("field-tags").value));
  const resources = { ...(spec.resources || {}) };
  const mem = bound(resources.memory_mb, { default: "field-memory_mb-default", min: "field-memory_mb-min", max: "field-memory_mb-max" });
  const cpu = bound(resources.cpu, { default: "field-cpu-default", max: "field-cpu-max" });
  setOrDrop(resources, "memory_mb", mem || "");
  setOrDrop(resources, "cpu", cpu || "");
  setOrDrop(spec, "resources", Object.keys(resources).length ? resources : "");
  if (spec.lifetime_minutes || $("field-lifetime-max").value !== "") {
    const life = { ...(spec.lifetime_minutes || {}) };
    setOrDrop(life, "max", $("field-lifetime-max").value === "" ? "" : Number($("field-lifetime-max").value));
    if (life.default === undefined && life.max !== undefined) life.default = life.max;
    spec.lifetime_minutes = life;
  }
  const quota = { ...(spec.quota || {}) };
  setOrDrop(quota, "running", $("field-quota-running").value === "" ? "" : Number($("field-quota-running").value));
  if ($("field-quota-queue").checked) quota.queue = true; else delete quota.queue;
  setOrDrop(spec, "quota", Object.keys(quota).length ? quota : "");
  if ($("field-enabled").checked) delete spec.enabled; else spec.enabled = false;
  return spec;
}

async function openEditor(name) {
  const { ok, data } = await api("GET", `templates/${encodeURIComponent(name)}`);
  if (!ok) { say(data.message, "danger"); return; }
  current = { name, etag: data.etag, spec: data.spec, yaml: data.yaml };
  $("editing-name").textContent = name;
  $("yaml-text").value = data.yaml;
  fill(data.spec);
  showProblems(null);
  $("delete").classList.remove("d-none");
  $("editor").classList.remove("d-none");
  setView("form");
  loadHistory(name);
}

function newTemplate() {
  current = { name: null, etag: null, spec: {}, yaml: "" };
  $("editing-name").textContent = "a new template";
  $("yaml-text").value = [
    "name: my-template", "display_name: My template", "resource_type: local", "providers: [local]",
    "tags: []", "spawner:", "  class: jupyterhub.spawner.LocalProcessSpawner", "  kwargs: {}", "",
  ].join("\n");
  showProblems(null);
  $("delete").classList.add("d-none");
  $("editor").classList.remove("d-none");
  setView("yaml");
}

function pendingBody() {
  if (view === "yaml" || current.name === null) return { body: $("yaml-text").value, type: "application/yaml" };
  return { body: specFromForm(), type: "application/json" };
}

async function save(name, body, etag, type) {
  const creating = name === null;
  const path = creating ? "templates" : `templates/${encodeURIComponent(name)}`;
  const { ok, status, data } = await api(creating ? "POST" : "PUT", path, body, type, etag);
  if (ok) {
    say(`Saved ${data.name}: the spawn form uses it from now on.`, "success");
    showProblems(null);
    await loadTable();
    if (current && (current.name === name || creating)) await openEditor(data.name);
    return;
  }
  showProblems(data);
  say(status === 409 ? "Someone else changed this template meanwhile: reload it and edit again."
    : (data.message || `saving failed (${status})`), status === 409 ? "warning" : "danger");
}

$("save").onclick = () => {
  const { body, type } = pendingBody();
  save(current.name, body, current.etag, type);
};
$("validate").onclick = async () => {
  const { body, type } = pendingBody();
  const { data } = await api("POST", "validate", body, type);
  showProblems(data);
  say(data.valid ? "The template is valid." : (data.message || "The template has problems."), data.valid ? "success" : "warning");
};
$("delete").onclick = async () => {
  if (!current || !current.name || !confirm(`Delete ${current.name}?`)) return;
  const { ok, data } = await api("DELETE", `templates/${encodeURIComponent(current.name)}`, undefined, undefined, current.etag);
  if (!ok) { showProblems(data); say(data.message, "danger"); return; }
  say(`Deleted ${current.name}.`, "success");
  $("editor").classList.add("d-none");
  current = null;
  loadTable();
};
$("close").onclick = () => { $("editor").classList.add("d-none"); current = null; };
$("tab-form").onclick = () => setView("form");
$("tab-yaml").onclick = async () => {
  if (current && current.name !== null && view === "form") {
    // the server writes the form's (unsaved) template as YAML, so no edit is lost
    const { data } = await api("POST", "validate", specFromForm());
    $("yaml-text").value = data.yaml;
    showProblems(data);
  }
  setView("yaml");
};
$("new-template").onclick = newTemplate;
$("preview").onclick = async () => {
  // through api(): the hub accepts the login cookie on a script's request only with the XSRF token
  const group = $("preview-group").value.trim();
  const { ok, data } = await api("GET", `preview?group=${encodeURIComponent(group)}`);
  const out = $("preview-output");
  if (!ok) {
    out.classList.add("d-none");
    say([data.message || "the preview failed", ...(data.problems || [])].join("\n"), "danger");
    return;
  }
  out.classList.remove("d-none");
  out.innerHTML = data.html; // server-rendered, escaped spawn form; its scripts do not run here
};

async function loadHistory(name) {
  const { ok, data } = await api("GET", name ? `history?template=${encodeURIComponent(name)}` : "history");
  const box = $("history");
  box.replaceChildren();
  if (!ok) return;
  for (const h of data.history) {
    const item = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = `${h.time} ${h.actor} ${h.action} ${h.template}`;
    const pre = document.createElement("pre");
    pre.className = "diff";
    pre.textContent = h.diff;
    item.append(summary, pre);
    box.appendChild(item);
  }
}

loadTable();
loadHistory(null);
