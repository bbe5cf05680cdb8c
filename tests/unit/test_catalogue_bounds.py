"""Bounded parsing, anchored patterns and the operator's allow-lists in the catalogue loader."""

import json
import sys
import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multiplespawner.catalogue import (
    MAX_DEPTH,
    CatalogueError,
    CataloguePolicy,
    build_catalogue,
    is_identifier,
    load_catalogue,
    parse_document,
    validate_document,
)
from tests.fixtures.editor import alias_bomb

DEPLOYMENTS = {"local": [{"name": "hub-host", "provider": "local"}]}


def template(name="t", **over):
    return {"name": name, "resource_type": "local", "providers": ["local"],
            "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner", "kwargs": {}}, **over}


def problems_of(document, policy=CataloguePolicy()):
    with pytest.raises(CatalogueError) as info:
        build_catalogue([validate_document(document, "c.yaml")], policy)
    return {p.path: p.message for p in info.value.problems}


# ---- parsing ------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [1, 6, 12])
def test_yaml_aliases_are_refused_before_expanding(levels):
    started = time.monotonic()
    with pytest.raises(CatalogueError, match=r"YAML aliases \(\*name\) are not accepted"):
        parse_document(alias_bomb(levels), "bomb.yaml")
    assert time.monotonic() - started < 1


def test_anchors_without_aliases_are_plain_yaml():
    assert parse_document("a: &x 1\nb: 2\n", "c.yaml") == {"a": 1, "b": 2}


@pytest.mark.parametrize("syntax", ["json", "yaml"])
def test_nesting_is_capped(syntax):
    ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert parse_document(ok, "c", syntax=syntax) is not None
    for depth in (MAX_DEPTH + 1, 5000, 100000):
        with pytest.raises(CatalogueError, match=f"nested deeper than {MAX_DEPTH} levels"):
            parse_document("[" * depth + "]" * depth, "c", syntax=syntax)
    with pytest.raises(CatalogueError, match=f"not valid {syntax.upper()}"):
        parse_document("[" * 100000, "c", syntax=syntax)


def test_size_encoding_and_plain_data():
    policy = CataloguePolicy(max_bytes=2048)
    with pytest.raises(CatalogueError, match="too large: 2049 bytes; at most 2048 are accepted"):
        parse_document("#" * 2049, "c.yaml", policy)
    with pytest.raises(CatalogueError, match="not UTF-8 text"):
        parse_document(b"name: \xff", "c.yaml")
    for text, words in (("d: 2024-01-01", "date values are not accepted"),
                        ("s: !!set {a: null}", "set values are not accepted"),
                        ("b: !!binary aGk=", "bytes values are not accepted"),
                        ("{1: a}", "key 1 is not a string"),
                        ("n: " + "1" * 5000, "not valid YAML"),
                        ("x: !!python/object:os.system {}", "not valid YAML")):
        with pytest.raises(CatalogueError, match=words):
            parse_document(text, "c.yaml")


def test_oversized_file_is_a_problem_without_reading_it_all(tmp_path):
    f = tmp_path / "big.yaml"
    f.write_text("# padding\n" * 300)
    with pytest.raises(CatalogueError) as info:
        load_catalogue([f], CataloguePolicy(max_bytes=1024))
    assert str(info.value) == f"{f}: at /: too large: 1025 bytes; at most 1024 are accepted"


# ---- anchored patterns --------------------------------------------------------------------
@pytest.mark.parametrize("value", ["evil\n", "evil\r\n", "a" * 64, "", "../x", "-x", "a b"])
def test_identifiers_are_whole_strings(value):
    assert not is_identifier(value)
    with pytest.raises(CatalogueError, match="does not match"):
        validate_document([template(value)], "c.yaml")


def test_every_schema_pattern_is_anchored_at_the_very_end():
    host = {"address": "127.0.0.1", "host_key": "ssh-ed25519 AAAA\n"}
    doc = {"deployments": {"bare_metal": [{"name": "pool", "provider": "pool\n", "hosts": [host]}]},
           "templates": [template(spawner={"class": "jupyterhub.spawner.LocalProcessSpawner\n"},
                                  environment={"PATH\n": "x"})]}
    with pytest.raises(CatalogueError) as info:
        validate_document(doc, "c.yaml")
    paths = sorted(p.path for p in info.value.problems)
    assert paths == ["/deployments/bare_metal/0/hosts/0/host_key", "/deployments/bare_metal/0/provider",
                     "/templates/0/environment", "/templates/0/spawner/class"]


# ---- allow-lists --------------------------------------------------------------------------
def test_spawner_class_outside_the_allow_list_is_refused_without_importing(tmp_path, monkeypatch):
    (tmp_path / "ms_import_probe.py").write_text("import sys\nsys.ms_import_probe_ran = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    doc = {"deployments": DEPLOYMENTS, "templates": [
        template("a", spawner={"class": "jupyterhub.spawner.SimpleLocalProcessSpawner", "kwargs": {"cmd": ["sh"]}}),
        template("b", spawner={"class": "ms_import_probe.Spawner"}),
        template("c", spawner={"class": "simple"}),
    ]}
    problems = problems_of(doc)
    for i, name in enumerate(["jupyterhub.spawner.SimpleLocalProcessSpawner", "ms_import_probe.Spawner", "simple"]):
        assert problems[f"/templates/{i}/spawner/class"] == (
            f"spawner class {name!r} is not allowed: the operator lists the classes templates may use "
            "in allowed_spawner_classes")
    assert not hasattr(sys, "ms_import_probe_ran") and "ms_import_probe" not in sys.modules
    # the operator may allow it
    allowed = CataloguePolicy(spawner_classes=frozenset({"jupyterhub.spawner.SimpleLocalProcessSpawner"}))
    build_catalogue([validate_document({"deployments": DEPLOYMENTS, "templates": doc["templates"][:1]}, "c")], allowed)


def test_configurer_allow_list_hub_paths_and_jinja():
    doc = {"deployments": DEPLOYMENTS, "templates": [
        template("a", configurer={"class": "my.Configurer"}),
        template("b", configurer={"class": "ansible", "options": {
            "playbook_dir": "/tmp/mine", "work_dir": "/", "playbook": "../../x.yml",
            "variables": {"v": ["{{ lookup('pipe', 'id') }}"], "w": "{% raw %}"}}}),
        template("c", configurer={"class": "ansible", "options": {"playbook": "site.yml", "timeout": 9,
                                                                   "variables": {"notebook_env_path": "/opt/nb"}}}),
    ]}
    problems = problems_of(doc)
    assert problems == {
        "/templates/0/configurer/class": "configurer class 'my.Configurer' is not allowed: the operator lists "
                                         "the classes templates may use in allowed_configurer_classes",
        "/templates/1/configurer/options/playbook_dir": "playbook_dir is a path on the hub: the operator sets "
                                                        "it in the hub's configuration, a template may not",
        "/templates/1/configurer/options/work_dir": "work_dir is a path on the hub: the operator sets it in "
                                                    "the hub's configuration, a template may not",
        "/templates/1/configurer/options/playbook": "must be a relative path inside the playbook directory (no '..')",
        "/templates/1/configurer/options/variables/v/0": "Jinja markup ({{, {% or {#) is not accepted in "
                                                         "configurer options: Ansible would evaluate it on the hub",
        "/templates/1/configurer/options/variables/w": "Jinja markup ({{, {% or {#) is not accepted in "
                                                       "configurer options: Ansible would evaluate it on the hub",
    }


# ---- the loader never fails otherwise -----------------------------------------------------
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)
_FIELDS = ["name", "resource_type", "providers", "spawner", "configurer", "authenticator", "access",
           "resources", "lifetime_minutes", "environment", "requires", "tags", "enabled"]
_templates = st.builds(lambda over: {**template(), **over},
                       st.dictionaries(st.sampled_from(_FIELDS), _json, max_size=3))
_documents = st.one_of(
    _json,
    st.lists(_templates, max_size=3),
    st.builds(lambda ts, deps: {"deployments": deps, "templates": ts}, st.lists(_templates, max_size=3),
              st.one_of(st.just(DEPLOYMENTS), _json)),
)


@settings(derandomize=True, max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(document=_documents, syntax=st.sampled_from(["json", "yaml"]))
def test_loader_raises_only_catalogue_errors(tmp_path, document, syntax):
    f = tmp_path / f"c.{syntax}"
    f.write_text(json.dumps(document) if syntax == "json" else yaml.safe_dump(document))
    try:
        load_catalogue([f])
    except CatalogueError as e:
        assert e.problems and all(p.message for p in e.problems)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode), syntax=st.sampled_from(["json", "yaml"]))
def test_parser_raises_only_catalogue_errors(data, syntax):
    try:
        parse_document(data, "c", syntax=syntax)
    except CatalogueError as e:
        assert e.problems
