"""Attacks on the template editor service and the catalogue, against a real hub and editor.

Each test reproduces a way in (a course editor running commands as the hub's user, YAML alias
bombs, inputs that crashed handlers, a name with a trailing newline, imports of arbitrary
modules) and shows it is refused with a 4xx naming the problem, with nothing written or started.
"""

import os
import subprocess
import sys
import time

import pytest
import yaml

from tests.fixtures.editor import alias_bomb, hub_session, local_template, start_editor_hub
from tests.fixtures.procs import wait_until

SIMPLE = "jupyterhub.spawner.SimpleLocalProcessSpawner"


@pytest.fixture
def editor(hub_factory, tmp_path):
    return start_editor_hub(hub_factory, tmp_path)


def catalogue_state(catalogue):
    return {p.name: p.read_bytes() for p in catalogue.iterdir() if not p.name.startswith(".")}


def no_tracebacks(hub):
    log = hub.log_text()
    assert "Traceback" not in log and "Uncaught exception" not in log, log[-4000:]


def test_course_editor_cannot_run_commands_as_the_hub_user(editor, tmp_path):
    """The review's finding: a course editor PUT a SimpleLocalProcessSpawner with a shell command
    and spawned it, running the command as root. Refused now, by the editor and the loader."""
    hub, catalogue = editor.hub, editor.catalogue
    ta, boss = editor.token("ta"), editor.token("boss")
    marker = tmp_path / "ran-as-hub-user"
    cmd = ["/bin/sh", "-c", f"touch {marker}; exec sleep 60"]
    # the command works: were it started, the marker would appear
    probe = tmp_path / "probe"
    subprocess.run(["/bin/sh", "-c", f"touch {probe}"], check=True)
    assert probe.exists()

    # the hub has loaded the good catalogue (a student's spawn form lists course-a-lab)
    assert "course-a-lab" in hub_session(hub, "student").get(f"{hub.url}/hub/spawn", timeout=30).text
    before = catalogue_state(catalogue)

    current = editor.call(ta, "GET", "templates/course-a-lab").json()
    evil = {**current["spec"], "spawner": {"class": SIMPLE, "kwargs": {"cmd": cmd}}, "access": {}}
    r = editor.call(ta, "PUT", "templates/course-a-lab", json=evil, headers={"If-Match": current["etag"]})
    assert r.status_code == 403, r.text
    problems = r.json()["problems"]
    assert [p.split(":")[0] for p in problems] == ["spawner"]  # access: {} (everyone) is as it was
    assert "changing spawner.class needs the unrestricted custom:templates:edit permission" in problems[0]
    # nor as a new template of the course, nor only the kwargs
    r = editor.call(ta, "POST", "templates", json={**evil, "name": "course-a-evil"})
    assert r.status_code == 403 and "spawner: " in r.text
    only_cmd = {**current["spec"], "spawner": {**current["spec"]["spawner"], "kwargs": {"cmd": cmd}}}
    r = editor.call(ta, "PUT", "templates/course-a-lab", json=only_cmd, headers={"If-Match": current["etag"]})
    assert r.status_code == 403 and "spawner.kwargs.cmd needs the unrestricted" in r.json()["message"]

    # the unrestricted editor may set classes, but only from the allow-list
    r = editor.call(boss, "PUT", "templates/course-a-lab", json=evil, headers={"If-Match": current["etag"]})
    assert r.status_code == 400, r.text
    assert r.json()["problems"] == [
        f"courses.yaml: at /0/spawner/class: spawner class '{SIMPLE}' is not allowed: the operator "
        "lists the classes templates may use in allowed_spawner_classes"]
    assert catalogue_state(catalogue) == before

    # a hand-edited file cannot bypass it: the hub's loader refuses the template
    (catalogue / "zz-hand-edit.yaml").write_text(yaml.safe_dump([{
        **local_template("evil", tags=["course-a"]), "spawner": {"class": SIMPLE, "kwargs": {"cmd": cmd}}}]))
    time.sleep(0.5)  # past the hub's catalogue check interval
    r = hub.api("POST", "/users/student/server", json={"template": "evil"})
    assert r.status_code == 400 and "There is no template named 'evil'" in r.json()["message"], r.text
    wait_until(lambda: "allowed_spawner_classes" in hub.log_text(), timeout=10, message="catalogue error logged")
    assert f"zz-hand-edit.yaml: at /0/spawner/class: spawner class '{SIMPLE}' is not allowed" in hub.log_text()
    time.sleep(2)
    assert not marker.exists()
    assert hub.api("GET", "/users/student").json()["servers"] == {}
    no_tracebacks(hub)


def test_yaml_alias_bombs_are_refused_fast_and_small(editor):
    """A 6xx-byte alias bomb kept an editor thread busy 20 s; at 6 levels a save answered 201
    with 25.8 MB. Now: 400 within seconds, a short answer, nothing saved, no thread stuck."""
    boss = editor.token("boss")
    before = catalogue_state(editor.catalogue)
    for levels, path in ((5, "validate"), (6, "templates"), (9, "validate")):
        body = alias_bomb(levels)
        assert len(body) < 1000
        started = time.monotonic()
        r = editor.call(boss, "POST", path, data=body, headers={"Content-Type": "application/yaml"})
        elapsed = time.monotonic() - started
        assert r.status_code == 400, r.text[:500]
        assert "YAML aliases (*name) are not accepted" in r.text
        assert len(r.content) < 2000 and elapsed < 5, (len(r.content), elapsed)
    assert catalogue_state(editor.catalogue) == before
    # the service still answers at once
    started = time.monotonic()
    assert editor.call(boss, "GET", "templates").status_code == 200
    assert time.monotonic() - started < 5

    # a bomb written into the catalogue by hand: the hub's loader refuses it, the spawn form
    # keeps the last good catalogue and comes at once
    hub = editor.hub
    session = hub_session(hub, "student")
    assert "course-a-lab" in session.get(f"{hub.url}/hub/spawn", timeout=30).text
    (editor.catalogue / "zz-bomb.yaml").write_text(alias_bomb(9))
    time.sleep(0.5)  # past the hub's catalogue check interval
    started = time.monotonic()
    page = session.get(f"{hub.url}/hub/spawn", timeout=30)
    assert page.status_code == 200 and "course-a-lab" in page.text and "bomb" not in page.text
    assert time.monotonic() - started < 5
    wait_until(lambda: "zz-bomb.yaml: at /: not valid YAML: YAML aliases (*name) are not accepted" in hub.log_text(),
               timeout=10, message="the hub's catalogue error logged")
    no_tracebacks(hub)


def test_bad_bodies_and_names_are_400_never_500(editor):
    """Deep nesting (RecursionError), a list or mapping as name, a name with a trailing newline,
    non-UTF-8 and oversized bodies: each a 4xx with a message, no file created."""
    hub, catalogue = editor.hub, editor.catalogue
    boss = editor.token("boss")
    etag = editor.call(boss, "GET", "templates/course-a-lab").json()["etag"]
    before = catalogue_state(catalogue)
    deep = "[" * 100000
    cases = [
        ("POST", "templates", deep, "application/json", {}),
        ("POST", "templates", deep, "application/yaml", {}),
        ("PUT", "templates/course-a-lab", deep, "application/json", {"If-Match": etag}),
        ("PUT", "templates/course-a-lab", deep, "application/yaml", {"If-Match": etag}),
        ("POST", "validate", deep, "application/json", {}),
        ("POST", "validate", deep, "application/yaml", {}),
        ("POST", "validate", '{"name": ["a"]}', "application/json", {}),
        ("POST", "validate", '{"name": {"a": 1}}', "application/json", {}),
        ("POST", "validate", "name: [a]", "application/yaml", {}),
        ("POST", "templates", b"\xff\xfe name: x", "application/yaml", {}),
        ("POST", "templates", "name: x\nwhen: 2024-01-01\n", "application/yaml", {}),
        ("POST", "templates", "{1: 2}", "application/yaml", {}),
        ("POST", "templates", "name: " + "1" * 5000, "application/yaml", {}),
        ("POST", "templates", "x" * (1024 * 1024 + 1), "application/yaml", {}),
    ]
    for method, path, body, kind, headers in cases:
        r = editor.call(boss, method, path, data=body, headers={"Content-Type": kind, **headers})
        assert 400 <= r.status_code < 500, (method, path, kind, str(body)[:40], r.status_code, r.text[:300])
        assert r.json()["message"], r.text
    r = editor.call(boss, "POST", "templates", data="x" * (1024 * 1024 + 1))
    assert r.status_code == 413 and "at most 1048576" in r.json()["message"]

    # a name with a trailing newline: refused, no "evil\n.yaml"
    for body in ({**local_template("evil\n")}, {**local_template("evil/../../x")}):
        r = editor.call(boss, "POST", "templates", json=body)
        assert r.status_code == 400 and "the template needs a name" in r.json()["message"], r.text
    r = editor.call(boss, "POST", "templates", data='name: "evil\\n"\nresource_type: local\n',
                    headers={"Content-Type": "application/yaml"})
    assert r.status_code == 400
    r = editor.call(boss, "PUT", "templates/evil%0A", json=local_template("evil\n"), headers={"If-Match": "x"})
    assert 400 <= r.status_code < 500
    assert catalogue_state(catalogue) == before
    no_tracebacks(hub)


def test_checks_import_only_allowed_classes(hub_factory, tmp_path):
    """validate and preview used to import whatever module a template named: here a module on
    the editor's and the hub's import path that leaves a marker when imported."""
    marker = tmp_path / "imported"
    module_dir = tmp_path / "modules"
    module_dir.mkdir()
    (module_dir / "evil_probe.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    path = os.pathsep.join(p for p in (str(module_dir), os.environ.get("PYTHONPATH")) if p)
    editor = start_editor_hub(hub_factory, tmp_path, env={"PYTHONPATH": path})
    boss = editor.token("boss")
    spec = {**local_template("probe"), "spawner": {"class": "evil_probe.Spawner"}}
    r = editor.call(boss, "POST", "validate", json=spec)
    assert r.status_code == 200 and r.json()["valid"] is False
    assert "spawner class 'evil_probe.Spawner' is not allowed" in r.json()["problems"][0]
    (editor.catalogue / "zz-probe.yaml").write_text(yaml.safe_dump([spec]))
    r = editor.call(boss, "GET", "preview", params={"group": "course-a"})
    assert r.status_code == 400 and "allowed_spawner_classes" in r.text
    time.sleep(0.5)  # past the hub's catalogue check interval: the spawn form reloads it
    assert hub_session(editor.hub, "student").get(f"{editor.hub.url}/hub/spawn", timeout=30).status_code == 200
    wait_until(lambda: "evil_probe.Spawner' is not allowed" in editor.hub.log_text(), timeout=10,
               message="the hub's catalogue error logged")
    assert not marker.exists()
    # the module is importable there: were the class allowed, the check would have imported it
    subprocess.run([sys.executable, "-c", "import evil_probe"], env={**os.environ, "PYTHONPATH": path}, check=True)
    assert marker.exists()
