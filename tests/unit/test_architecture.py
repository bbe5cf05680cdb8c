"""The import rules of docs/architecture.md: each part, imported (and used) in a fresh
interpreter, loads only what sits below it."""

import json
import subprocess
import sys

import pytest

SUITE = ("multiplespawner", "cloudsshspawner", "headerauthenticator", "ldap_hooks")
CATALOGUE_PART = {"multiplespawner", "multiplespawner.catalogue", "multiplespawner.classes",
                  "multiplespawner.legacy_format", "multiplespawner.metrics"}
#: the small files the fleet service writes and the hub reads (standard library only)
HUB_FILES = {"multiplespawner.drain", "multiplespawner.extensions", "multiplespawner.notices", "multiplespawner.json_file"}
#: what the template editor's process must never load: spawning, SSH and Docker code
EDITOR_NEVER = {"asyncssh", "docker", "dockerspawner", "multiplespawner.spawner",
                "multiplespawner.machines", "cloudsshspawner"}


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


def suite_modules(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in SUITE}


def under(modules: set[str], roots: set[str]) -> set[str]:
    """The modules that are one of ``roots`` or inside one of them."""
    return {m for m in modules if any(m == r or m.startswith(r + ".") for r in roots)}


EDITOR_AT_WORK = """
import multiplespawner.editor.cli
from multiplespawner.catalogue import default_catalogue_path, load_catalogue
from multiplespawner.classes import locate_spawner_class
from multiplespawner.editor.app import PreviewHandler
from multiplespawner.editor.store import TemplateStore
from multiplespawner.form import render_form
catalogue = load_catalogue([default_catalogue_path()], check_class=locate_spawner_class)
assert "container" in catalogue.templates  # names dockerspawner.DockerSpawner
assert "Notebook container" in render_form(catalogue.usable_by(user_name="", groups=[], admin=True))
"""


FLEET_AT_WORK = """
import logging
from multiplespawner.catalogue import CatalogueSource, default_catalogue_path
from multiplespawner.classes import locate_spawner_class
from multiplespawner.fleet.app import FleetApp
from multiplespawner.fleet.servers import parse_filter, server_rows
import asyncio
source = CatalogueSource([default_catalogue_path()], logging.getLogger(), check_class=locate_spawner_class)
assert "container" in asyncio.run(source.get()).templates  # names dockerspawner.DockerSpawner
"""


@pytest.mark.parametrize("code, allowed", [
    pytest.param("import multiplespawner", {"multiplespawner"}, id="package-is-lazy"),
    pytest.param("import multiplespawner.metrics", {"multiplespawner", "multiplespawner.metrics"}, id="metrics"),
    pytest.param("import multiplespawner.hub_database", {"multiplespawner", "multiplespawner.hub_database"},
                 id="hub-database"),
    pytest.param("import multiplespawner.catalogue", CATALOGUE_PART, id="catalogue"),
    pytest.param("import multiplespawner.form", CATALOGUE_PART | {"multiplespawner.form"}, id="form"),
    pytest.param(EDITOR_AT_WORK, CATALOGUE_PART | {"multiplespawner.form", "multiplespawner.service",
                                                   "multiplespawner.editor.*"},
                 id="editor"),
    pytest.param(FLEET_AT_WORK, CATALOGUE_PART | HUB_FILES | {"multiplespawner.service", "multiplespawner.fleet.*"},
                 id="fleet"),
    pytest.param("import multiplespawner.drain, multiplespawner.extensions, multiplespawner.notices", HUB_FILES | {"multiplespawner"},
                 id="hub-files"),
    pytest.param("import multiplespawner.mounts.sshfs",
                 {"multiplespawner", "multiplespawner.mounts", "multiplespawner.mounts.sshfs"}, id="mounts"),
    pytest.param("import multiplespawner.mounts.server",
                 CATALOGUE_PART | {"multiplespawner.mounts", "multiplespawner.mounts.sshfs",
                                   "multiplespawner.mounts.server"}, id="mounts-server"),
    pytest.param("import multiplespawner.fleet.cli", {"multiplespawner", "multiplespawner.fleet",
                                                      "multiplespawner.fleet.cli"}, id="fleet-cli"),
    pytest.param("import multiplespawner.machines",
                 CATALOGUE_PART | HUB_FILES | {"multiplespawner.errors", "multiplespawner.shared_files",
                                   "multiplespawner.machines.*",
                                   "multiplespawner.children.*",
                                   "multiplespawner.providers.*", "multiplespawner.configurers.*", "cloudsshspawner.*"},
                 id="machines"),
    pytest.param("import multiplespawner.admission",
                 CATALOGUE_PART | {"multiplespawner.errors", "multiplespawner.admission"}, id="admission"),
    pytest.param("import multiplespawner.children", {"multiplespawner", "multiplespawner.classes", "multiplespawner.metrics", "multiplespawner.children.*"},
                 id="children-load-no-child-package"),
    pytest.param("import cloudsshspawner", {"cloudsshspawner.*"}, id="cloudsshspawner"),
    pytest.param("import headerauthenticator", {"headerauthenticator.*"}, id="headerauthenticator"),
    pytest.param("import ldap_hooks", {"ldap_hooks.*"}, id="ldap_hooks"),
])
def test_part_loads_only_what_sits_below_it(code, allowed):
    exact = {a for a in allowed if not a.endswith(".*")}
    prefixes = {a[:-2] for a in allowed if a.endswith(".*")}
    loaded = suite_modules(loaded_after(code))
    extra = loaded - exact - under(loaded, prefixes)
    assert not extra, f"{code.strip().splitlines()[0]!r} also loads {sorted(extra)}"


def test_the_editor_loads_no_spawning_ssh_or_docker_code():
    assert not under(loaded_after(EDITOR_AT_WORK), EDITOR_NEVER)


def test_the_fleet_service_loads_no_spawning_ssh_or_docker_code():
    """It reads and stops servers through the hub's REST API only."""
    assert not under(loaded_after(FLEET_AT_WORK), EDITOR_NEVER)


def test_the_fleet_cli_starts_light():
    """``multiplespawner-servers`` talks HTTP to the service: no JupyterHub, tornado or jsonschema."""
    assert not under(loaded_after("import multiplespawner.fleet.cli"),
                     {"jupyterhub", "tornado", "jsonschema", "yaml", "traitlets", "requests"})


def test_the_catalogue_loads_no_ssh_or_docker_code():
    assert not under(loaded_after("import multiplespawner.catalogue"), {"asyncssh", "docker", "dockerspawner"})


def test_the_spawner_is_still_reachable_from_the_package_and_its_entry_point():
    modules = loaded_after(
        "from importlib.metadata import entry_points\n"
        "from multiplespawner import MultipleSpawner\n"
        "(ep,) = entry_points(group='jupyterhub.spawners', name='multiple')\n"
        "assert ep.load() is MultipleSpawner\n"
    )
    assert "multiplespawner.spawner" in modules


def test_providers_know_nothing_of_jupyterhub():
    modules = loaded_after("import multiplespawner.providers.registry, multiplespawner.providers.docker")
    assert not under(modules, {"jupyterhub", "multiplespawner.machines", "multiplespawner.spawner"})


def test_the_child_adapters_load_no_child_spawner_package():
    """Adapters never import the class they adapt: a child class whose module is not loaded
    cannot derive from it anyway (see multiplespawner/children/base.py)."""
    modules = loaded_after("import multiplespawner.children")
    assert not under(modules, {"dockerspawner", "kubespawner", "batchspawner", "cloudsshspawner", "docker"})


def test_the_template_cli_starts_without_jsonschema_or_jupyterhub():
    """``multiplespawner-templates --help`` must start in a fraction of a second: importing
    jsonschema (its optional format checkers build a grammar at import) and JupyterHub's
    spawner (its ORM) took seconds; both load where a catalogue is validated or a class
    checked, not at import."""
    loaded = loaded_after("import multiplespawner.editor.cli, multiplespawner.catalogue, multiplespawner.classes")
    assert not under(loaded, {"jsonschema", "jupyterhub", "sqlalchemy", "rfc3987_syntax"}), sorted(
        under(loaded, {"jsonschema", "jupyterhub", "sqlalchemy", "rfc3987_syntax"}))
