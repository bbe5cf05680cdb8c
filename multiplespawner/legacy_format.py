"""The original MultipleSpawner's configuration files, read as they were printed.

The thesis's deployment and template files (Listings 11 and 12) use names and classes of the
original stack (``corc``) that mean nothing to this suite. :func:`translate` turns such a
document into the modern one before it is validated, and logs one notice per change naming the
modern spelling, so an operator can update the file and the notices stop:

* a ``container`` deployment without ``provider`` gets ``provider: docker`` (the original ran
  containers on the local Docker engine);
* a template ``name`` that is not an identifier (``"VirtualMachine Spawner"``) becomes one
  (``VirtualMachine-Spawner``) and the original text its ``display_name``, unless it has one;
* ``cloudsshspawner.cloudsshspawner.CloudSSHSpawner`` becomes ``cloudsshspawner.CloudSSHSpawner``;
* ``corc.configurer.AnsibleConfigurer`` becomes ``ansible`` (AnsibleConfigurer) with its
  options translated: ``host_variables`` -> ``variables``, except what the suite now gives every
  run itself (``users`` and ``jupyterhub``: the notebook user, its per-server key, the hub's
  address and host key; ``ansible_user``/``ansible_become*``: the admin login is
  ``c.MachineOrchestrator.admin_user``, the playbooks always become root); ``host_settings``
  (inventory group, SSH port: the port is the machine's own) is dropped;
  ``apply_kwargs.playbook_paths`` with one playbook becomes ``playbook_dir`` + ``playbook``,
  with several the shipped ``notebook-machine.yml`` (which prepares the environment and the
  user, what the original's pair of playbooks did) runs instead;
* ``corc.authenticator.SSHAuthenticator`` becomes ``certificate`` if ``create_certificate`` is
  true, else ``key``; ``key_name`` and ``load_existing`` are dropped (every server gets a new key
  of its own, never a stored one).

A modern document passes through unchanged (the same object). Pure function, no I/O but
logging; the input is not modified.
"""

from __future__ import annotations

import copy
import logging
import posixpath
import re

LOG = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
_NOT_IDENTIFIER_CHARS = re.compile(r"[^A-Za-z0-9._-]+")

SPAWNER_CLASSES = {"cloudsshspawner.cloudsshspawner.CloudSSHSpawner": "cloudsshspawner.CloudSSHSpawner"}
LEGACY_CONFIGURER = "corc.configurer.AnsibleConfigurer"
LEGACY_AUTHENTICATOR = "corc.authenticator.SSHAuthenticator"
#: host_variables the suite sets itself on every run (and why), dropped from ``variables``
SUPPLIED_VARIABLES = {
    "users": "the notebook user and its per-server key come from the server's credentials",
    "jupyterhub": "the hub's address and host key are not needed on the machine (the hub connects to it)",
    "ansible_user": "the admin login is c.MachineOrchestrator.admin_user",
    "ansible_become": "the shipped playbooks always become root",
    "ansible_become_method": "the shipped playbooks always become root (sudo)",
    "ansible_become_user": "the shipped playbooks always become root",
}


def _notice(filename: str, where: str, message: str) -> None:
    LOG.warning("%s: at %s: original MultipleSpawner format: %s", filename, where, message)


def _truthy(value) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in {"true", "yes", "1"})


def _identifier(name: str) -> str:
    return _NOT_IDENTIFIER_CHARS.sub("-", name).strip("-._")[:63] or "template"


def _deployments(deployments: dict, filename: str, at: str) -> dict:
    out = {}
    for resource_type, entries in deployments.items():
        if resource_type == "container" and isinstance(entries, list):
            fixed = []
            for i, entry in enumerate(entries):
                if isinstance(entry, dict) and "provider" not in entry:
                    _notice(filename, f"{at}/{resource_type}/{i}",
                            'a container deployment without "provider": write "provider": "docker"')
                    entry = {**entry, "provider": "docker"}
                fixed.append(entry)
            entries = fixed
        out[resource_type] = entries
    return out


def _configurer(spec: dict, filename: str, at: str) -> dict:
    _notice(filename, f"{at}/class", f'{LEGACY_CONFIGURER}: write "ansible"')
    legacy = dict(spec.get("options") or {})
    options = {}
    host_variables = legacy.pop("host_variables", None)
    if isinstance(host_variables, dict):
        for key in sorted(set(host_variables) & set(SUPPLIED_VARIABLES)):
            _notice(filename, f"{at}/options/host_variables/{key}", f"dropped: {SUPPLIED_VARIABLES[key]}")
        variables = {k: v for k, v in host_variables.items() if k not in SUPPLIED_VARIABLES}
        if variables:
            _notice(filename, f"{at}/options/host_variables", 'write "variables"')
            options["variables"] = variables
    if "host_settings" in legacy:
        legacy.pop("host_settings")
        _notice(filename, f"{at}/options/host_settings",
                "dropped: machines are not grouped in an inventory, and SSH goes to the machine's own port")
    apply_kwargs = legacy.pop("apply_kwargs", None)
    paths = (apply_kwargs or {}).get("playbook_paths") if isinstance(apply_kwargs, dict) else None
    if isinstance(paths, list) and len(paths) == 1 and isinstance(paths[0], str):
        options["playbook_dir"], options["playbook"] = posixpath.split(paths[0])
        _notice(filename, f"{at}/options/apply_kwargs/playbook_paths",
                f'write "playbook_dir": "{options["playbook_dir"]}", "playbook": "{options["playbook"]}"')
    elif apply_kwargs is not None:
        _notice(filename, f"{at}/options/apply_kwargs",
                "dropped: the shipped notebook-machine.yml prepares the environment and the notebook "
                'user; to run your own, write "playbook_dir" and "playbook" (one playbook that '
                "imports the others)")
    options.update(legacy)  # anything else is AnsibleConfigurer's own (or a schema error)
    return {**{k: v for k, v in spec.items() if k != "options"}, "class": "ansible", "options": options}


def _authenticator(spec: dict, filename: str, at: str) -> dict:
    kwargs = dict(spec.get("kwargs") or {})
    modern = "certificate" if _truthy(kwargs.pop("create_certificate", False)) else "key"
    _notice(filename, f"{at}/class", f'{LEGACY_AUTHENTICATOR}: write "class": "{modern}"')
    for key in ("key_name", "load_existing"):
        if kwargs.pop(key, None) is not None:
            _notice(filename, f"{at}/kwargs/{key}",
                    "dropped: every server gets a new key of its own, never a stored one")
    return {"class": modern, **({"kwargs": kwargs} if kwargs else {})}


def _template(template: dict, filename: str, at: str) -> dict:
    t = dict(template)
    name = t.get("name")
    if isinstance(name, str) and not _IDENTIFIER.match(name):
        t["name"] = _identifier(name)
        t.setdefault("display_name", name)
        _notice(filename, f"{at}/name",
                f'{name!r} is not an identifier: write "name": "{t["name"]}", "display_name": "{name}"')
    spawner = t.get("spawner")
    if isinstance(spawner, dict) and spawner.get("class") in SPAWNER_CLASSES:
        modern = SPAWNER_CLASSES[spawner["class"]]
        _notice(filename, f"{at}/spawner/class", f'write "{modern}"')
        t["spawner"] = {**spawner, "class": modern}
    configurer = t.get("configurer")
    if isinstance(configurer, dict) and configurer.get("class") == LEGACY_CONFIGURER:
        t["configurer"] = _configurer(configurer, filename, f"{at}/configurer")
    authenticator = t.get("authenticator")
    if isinstance(authenticator, dict) and authenticator.get("class") == LEGACY_AUTHENTICATOR:
        t["authenticator"] = _authenticator(authenticator, filename, f"{at}/authenticator")
    return t


def _templates(templates: list, filename: str, at: str) -> list:
    return [_template(t, filename, f"{at}/{i}") if isinstance(t, dict) else t for i, t in enumerate(templates)]


def translate(document, filename: str):
    """The modern form of one catalogue file's parsed content (see the module docstring).

    ``document`` is a combined ``{"deployments", "templates"}`` mapping, a bare deployments
    mapping or a bare template list, as the catalogue accepts them; anything else is returned
    as it is, for the schema to report.
    """
    if isinstance(document, list):
        translated = _templates(document, filename, "")
    elif isinstance(document, dict) and ({"deployments", "templates"} & set(document)):
        translated = dict(document)
        if isinstance(document.get("deployments"), dict):
            translated["deployments"] = _deployments(document["deployments"], filename, "/deployments")
        if isinstance(document.get("templates"), list):
            translated["templates"] = _templates(document["templates"], filename, "/templates")
    elif isinstance(document, dict):
        translated = _deployments(document, filename, "")
    else:
        return document
    return document if translated == document else copy.deepcopy(translated)
