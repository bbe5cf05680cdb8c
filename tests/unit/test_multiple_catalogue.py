"""Catalogue reading, schema errors (file + path + problem), merging and hot reload."""

import asyncio
import json
import logging
import os
import textwrap

import pytest

from multiplespawner.catalogue import (
    DEFAULT_SPAWNER_CLASSES,
    CatalogueError,
    CataloguePolicy,
    CatalogueSource,
    default_catalogue_path,
    load_catalogue,
    resolve_placeholders,
)

DEPLOYMENTS = {
    "local": [{"name": "hub-host", "provider": "local"}],
    "container": [{"name": "docker-here", "provider": "docker", "image": "nb:1"}],
}


def template(name="t1", **over):
    spec = {
        "name": name,
        "resource_type": "local",
        "providers": ["local"],
        "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner", "kwargs": {}},
    }
    spec.update(over)
    return spec


#: allows the broken and test-only classes below, so the checks after the allow-list run
TEST_POLICY = CataloguePolicy(spawner_classes=frozenset(DEFAULT_SPAWNER_CLASSES) | {
    "nowhere_at_all.Spawner", "json.JSONDecoder", "nosuchspawner", "ms_probe_spawner.ProbeSpawner"})


def write(path, data):
    path.write_text(json.dumps(data) if path.suffix == ".json" else data)
    return path


def test_default_catalogue_loads():
    cat = load_catalogue([default_catalogue_path()])
    assert list(cat.templates) == ["local", "container"]
    assert cat.templates["container"].requires == ["docker", "image"]
    assert len(cat.version) == 12


def test_thesis_format_split_files_in_a_directory(tmp_path):
    write(tmp_path / "deployments.json", DEPLOYMENTS)
    write(tmp_path / "templates.json", [template(), template("c", resource_type="container", providers=["docker"])])
    (tmp_path / "notes.txt").write_text("ignored")
    cat = load_catalogue([tmp_path])
    assert list(cat.templates) == ["t1", "c"]
    assert cat.deployment(cat.templates["c"], "docker")["image"] == "nb:1"


def test_yaml_combined_document(tmp_path):
    f = tmp_path / "cat.yaml"
    f.write_text(textwrap.dedent("""
        deployments:
          local: [{name: h, provider: local}]
        templates:
          - name: a
            display_name: A
            resource_type: local
            providers: [local]
            access: {groups: [course-a]}
            resources: {cpu: {default: 1, min: 0.5, max: 2}}
            lifetime_minutes: {default: 60, max: 120}
            spawner: {class: jupyterhub.spawner.LocalProcessSpawner}
    """))
    t = load_catalogue([f]).templates["a"]
    assert t.display_name == "A"
    assert t.resources["cpu"].max == 2
    assert t.lifetime.max == 120


def test_schema_error_names_file_path_and_problem(tmp_path):
    f = write(tmp_path / "cat.json", {
        "deployments": DEPLOYMENTS,
        "templates": [template(), template("t2", resource_type="cloud", resources={"cpu": {"default": "x"}})],
    })
    with pytest.raises(CatalogueError) as info:
        load_catalogue([f])
    text = str(info.value)
    assert f"{f}: at /templates/1/resource_type: 'cloud' is not one of" in text
    assert f"{f}: at /templates/1/resources/cpu/default: 'x' is not of type 'number'" in text


def test_bare_template_list_paths_have_no_prefix(tmp_path):
    write(tmp_path / "d.json", DEPLOYMENTS)
    f = write(tmp_path / "t.json", [template(spawner={"kwargs": {}})])
    with pytest.raises(CatalogueError) as info:
        load_catalogue([tmp_path])
    assert f"{f}: at /0/spawner: 'class' is a required property" in str(info.value)


def test_cross_file_checks(tmp_path):
    write(tmp_path / "a.json", {"deployments": DEPLOYMENTS, "templates": [template()]})
    b = write(tmp_path / "b.json", [
        template(),  # duplicate name
        template("gpu", providers=["nowhere"]),
        template("bounds", resources={"memory_mb": {"default": 64, "min": 128, "max": 256}}),
        template("ph", environment={"X": "{NOT_A_PLACEHOLDER}"}),
    ])
    with pytest.raises(CatalogueError) as info:
        load_catalogue([tmp_path])
    problems = {(p.file, p.path): p.message for p in info.value.problems}
    assert "already defined in" in problems[(str(b), "/0/name")]
    assert "no local deployment has provider 'nowhere'" in problems[(str(b), "/1/providers/0")]
    assert "below min 128" in problems[(str(b), "/2/resources/memory_mb/default")]
    assert "unknown placeholder {NOT_A_PLACEHOLDER}" in problems[(str(b), "/3/environment/X")]


def test_unknown_placeholder_in_a_key_is_a_catalogue_problem(tmp_path):
    env = {"HOME_{JUPYTERHUB_USER}": "1", "X_{NOT_KNOWN}": "2"}
    spawner = {"class": "jupyterhub.spawner.LocalProcessSpawner", "kwargs": {"environment": env}}
    f = write(tmp_path / "c.json", {"deployments": DEPLOYMENTS, "templates": [template(spawner=spawner)]})
    with pytest.raises(CatalogueError) as info:
        load_catalogue([f])
    [problem] = info.value.problems
    assert problem.path == "/templates/0/spawner/kwargs/environment/X_{NOT_KNOWN}"
    assert "unknown placeholder {NOT_KNOWN}" in problem.message


def test_syntax_error_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("templates: [\n")
    with pytest.raises(CatalogueError) as info:
        load_catalogue([bad, tmp_path / "missing.json"])
    text = str(info.value)
    assert f"{bad}: at /: not valid YAML" in text
    assert f"{tmp_path / 'missing.json'}: at /: cannot read" in text


def test_version_changes_with_content(tmp_path):
    f = write(tmp_path / "c.json", {"deployments": DEPLOYMENTS, "templates": [template()]})
    v1 = load_catalogue([f]).version
    assert load_catalogue([f]).version == v1
    write(f, {"deployments": DEPLOYMENTS, "templates": [template(display_name="Changed")]})
    assert load_catalogue([f]).version != v1


def test_placeholders_leave_child_fields_alone():
    out = resolve_placeholders(
        {"a": "/home/{JUPYTERHUB_USER}", "b": ["{username}", "{DEPLOYMENT_IMAGE}"], "c": 3},
        {"JUPYTERHUB_USER": "ann", "DEPLOYMENT_IMAGE": "nb:1"},
    )
    assert out == {"a": "/home/ann", "b": ["{username}", "nb:1"], "c": 3}


def test_placeholders_in_keys_are_resolved():
    out = resolve_placeholders({"volumes": {"/home/{JUPYTERHUB_USER}": {"bind": "/home/{JUPYTERHUB_USER}"}}},
                               {"JUPYTERHUB_USER": "ann"})
    assert out == {"volumes": {"/home/ann": {"bind": "/home/ann"}}}


def test_values_are_substituted_once_and_escaped_where_the_child_formats_again():
    spec = {"notebook_dir": "/home/{JUPYTERHUB_USER}/{{literal}}/{username}",
            "volumes": {"/home/{JUPYTERHUB_USER}": "/data/{JUPYTERHUB_USER}"},
            "args": ["--name={JUPYTERHUB_USER}"]}
    values = {"JUPYTERHUB_USER": "bad{name}"}
    out = resolve_placeholders(spec, values, reformatted={"notebook_dir", "volumes"})
    # the child's str.format yields the value itself; the template's own braces stay as written
    assert out["notebook_dir"].format(username="u") == "/home/bad{name}/{literal}/u"
    assert {k.format(): v.format() for k, v in out["volumes"].items()} == {"/home/bad{name}": "/data/bad{name}"}
    assert out["args"] == ["--name=bad{name}"]  # not formatted again: substituted as is
    # a value that looks like a placeholder is not substituted a second time
    assert resolve_placeholders("{JUPYTERHUB_USER}", {"JUPYTERHUB_USER": "{TEMPLATE_NAME}",
                                                      "TEMPLATE_NAME": "t"}) == "{TEMPLATE_NAME}"


def test_access_rules(tmp_path):
    f = write(tmp_path / "c.json", {"deployments": DEPLOYMENTS, "templates": [
        template("open"),
        template("a", access={"groups": ["course-a"]}),
        template("b", access={"groups": ["course-b"], "users": ["bob"]}),
        template("adm", access={"admin_only": True}),
        template("off", enabled=False),
    ]})
    cat = load_catalogue([f])
    names = lambda *a: [t.name for t in cat.usable_by(*a)]  # noqa: E731
    assert names("ann", ["course-a"], False) == ["open", "a"]
    assert names("bob", [], False) == ["open", "b"]
    assert names("carl", ["course-c"], False) == ["open"]
    assert names("root", [], True) == ["open", "a", "b", "adm"]


async def _touch_write(f, data):
    write(f, data)
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


async def test_hot_reload_keeps_last_good_catalogue(tmp_path, caplog):
    f = write(tmp_path / "c.json", {"deployments": DEPLOYMENTS, "templates": [template()]})
    source = CatalogueSource([f], logging.getLogger("test"), check_interval=0)
    first = await source.get()
    assert list(first.templates) == ["t1"] and source.error is None

    assert await source.get() is first  # unchanged files: same object, no reload
    assert source.loads == 1

    await _touch_write(f, {"deployments": DEPLOYMENTS, "templates": [template(), template("t2")]})
    second = await source.get()
    assert list(second.templates) == ["t1", "t2"] and second.version != first.version

    with caplog.at_level(logging.ERROR):
        await _touch_write(f, {"deployments": DEPLOYMENTS, "templates": [template("t3", providers=[])]})
        kept = await source.get()
    assert kept is second
    assert f"{f}: at /templates/0/providers" in str(source.error)
    assert "keeping version " + second.version in caplog.text

    await _touch_write(f, {"deployments": DEPLOYMENTS, "templates": [template("t4")]})
    assert list((await source.get()).templates) == ["t4"] and source.error is None


async def test_concurrent_gets_share_one_check(tmp_path, monkeypatch):
    f = write(tmp_path / "c.json", {"deployments": DEPLOYMENTS, "templates": [template()]})
    source = CatalogueSource([f], logging.getLogger("test"), check_interval=60)
    calls = []
    real = source._refresh
    monkeypatch.setattr(source, "_refresh", lambda: (calls.append(1), real()))
    results = await asyncio.gather(*(source.get() for _ in range(20)))
    assert len(calls) == 1 and all(r is results[0] for r in results)


async def test_first_load_failure_raises(tmp_path):
    f = tmp_path / "c.json"
    f.write_text("{")
    source = CatalogueSource([f], logging.getLogger("test"), check_interval=0)
    with pytest.raises(CatalogueError, match="not valid JSON"):
        await source.get()


def test_spawner_class_that_cannot_be_used_is_a_catalogue_problem(tmp_path):
    f = write(tmp_path / "c.json", {"deployments": DEPLOYMENTS, "templates": [
        template("fine"),
        template("gone", spawner={"class": "nowhere_at_all.Spawner"}),
        template("not-a-spawner", spawner={"class": "json.JSONDecoder"}),
        template("no-entry-point", spawner={"class": "nosuchspawner"}),
        template("by-entry-point", resource_type="container", providers=["docker"],
                 spawner={"class": "docker"}),
    ]})
    with pytest.raises(CatalogueError) as info:
        load_catalogue([f], TEST_POLICY)
    problems = {p.path: p.message for p in info.value.problems}
    assert all(p.file == str(f) for p in info.value.problems)
    assert sorted(problems) == ["/templates/1/spawner/class", "/templates/2/spawner/class",
                                "/templates/3/spawner/class"]
    assert problems["/templates/1/spawner/class"].startswith(
        "cannot import spawner class 'nowhere_at_all.Spawner': No module named 'nowhere_at_all'")
    assert "'json.JSONDecoder' is not a JupyterHub Spawner class" in problems["/templates/2/spawner/class"]
    assert "no spawner is registered under the name 'nosuchspawner'" in problems["/templates/3/spawner/class"]


async def test_spawner_classes_import_in_the_reload_thread_once(tmp_path, monkeypatch, caplog):
    """A template's class is imported by the reload (a worker thread), once per process."""
    import sys
    import threading

    import multiplespawner.classes as classes_module

    monkeypatch.setattr(classes_module, "_SPAWNER_CLASSES", {})  # as in a fresh process

    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "ms_probe_spawner.py").write_text(textwrap.dedent("""
        import threading
        from jupyterhub.spawner import LocalProcessSpawner
        IMPORTED_IN = threading.current_thread()
        class ProbeSpawner(LocalProcessSpawner):
            pass
    """))
    monkeypatch.syspath_prepend(str(modules))
    monkeypatch.delitem(sys.modules, "ms_probe_spawner", raising=False)
    lookups = []
    real_entry_points = classes_module.entry_points
    monkeypatch.setattr(classes_module, "entry_points",
                        lambda **kw: (lookups.append(kw["name"]), real_entry_points(**kw))[1])

    probe = template("probe", spawner={"class": "ms_probe_spawner.ProbeSpawner"})
    by_name = template("by-name", spawner={"class": "localprocess"})
    f = write(tmp_path / "c.json", {"deployments": DEPLOYMENTS, "templates": [probe, by_name]})
    source = CatalogueSource([f], logging.getLogger("test"), check_interval=0, policy=TEST_POLICY)
    await source.get()
    assert sys.modules["ms_probe_spawner"].IMPORTED_IN is not threading.main_thread()
    assert lookups == ["localprocess"]

    # a broken edit: the last good catalogue stays, the problem is reported
    with caplog.at_level(logging.ERROR):
        await _touch_write(f, {"deployments": DEPLOYMENTS, "templates": [
            probe, by_name, template("gone", spawner={"class": "nowhere_at_all.Spawner"})]})
        kept = await source.get()
    assert list(kept.templates) == ["probe", "by-name"]
    assert f"{f}: at /templates/2/spawner/class: cannot import spawner class 'nowhere_at_all.Spawner'" \
        in str(source.error)
    assert "cannot import spawner class" in caplog.text

    await _touch_write(f, {"deployments": DEPLOYMENTS, "templates": [probe, by_name, template("t2")]})
    assert list((await source.get()).templates) == ["probe", "by-name", "t2"]
    assert lookups == ["localprocess"]  # resolved classes are not looked up again
