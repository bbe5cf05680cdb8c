"""MultipleSpawner in a real JupyterHub (with CHP): REST validation, local spawns, named
servers, hot reload, hub restart, session expiry.

Local templates run ``jupyterhub.tests.mocksu`` (a stand-in single-user server that answers
``/env`` with its environment) as a real Unix user through LocalProcessSpawner.
"""

import json
import subprocess
import sys
import time

import pytest
import requests

from tests.fixtures.procs import wait_until

PY = sys.executable


def catalogue(templates_extra=(), env=None, lifetime=None):
    local = {
        "name": "local-mock",
        "display_name": "Local (mock server)",
        "resource_type": "local",
        "providers": ["local"],
        "resources": {"cpu": {"default": 1, "min": 0.5, "max": 2}, "memory_mb": {"default": 512, "min": 128, "max": 1024}},
        "environment": {"WHO": "{JUPYTERHUB_USER}/{JUPYTERHUB_SERVER_NAME}", **(env or {})},
        "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner",
                    "kwargs": {"cmd": [PY, "-m", "jupyterhub.tests.mocksu"]}},
    }
    if lifetime:
        local["lifetime_minutes"] = lifetime
    other = {**local, "name": "local-other", "display_name": "Other local", "resources": {},
             "environment": {"WHO": "other"}}
    restricted = {**other, "name": "course-b-only", "display_name": "Course B only",
                  "access": {"groups": ["course-b"]}}
    return {
        "deployments": {"local": [{"name": "hub-host", "provider": "local"}]},
        "templates": [local, other, restricted, *templates_extra],
    }


def write_catalogue(path, data):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data) if not isinstance(data, str) else data)
    tmp.replace(path)


@pytest.fixture
def cat_file(tmp_path):
    tmp_path.chmod(0o755)
    path = tmp_path / "catalogue.json"
    write_catalogue(path, catalogue())
    return path


def hub_config(cat_file, extra=""):
    return f"""
c.JupyterHub.spawner_class = "multiple"
c.JupyterHub.allow_named_servers = True
c.MultipleSpawner.catalogue_paths = [{str(cat_file)!r}]
c.MultipleSpawner.catalogue_check_interval = 0
c.MultipleSpawner.lifetime_grace = 0
c.Spawner.poll_interval = 5
{extra}
"""


def processes_of(user: str) -> list[str]:
    out = subprocess.run(["ps", "-o", "pid=,args=", "-u", user], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if line.strip()]


def server_env(hub, user, server_name=""):
    r = hub.server_request(user, "env", server_name=server_name)
    assert r.status_code == 200, r.text
    return r.json()


def login(hub, name) -> requests.Session:
    s = requests.Session()
    s.get(f"{hub.url}/hub/login", timeout=30)
    r = s.post(f"{hub.url}/hub/login", data={"username": name, "password": hub.password,
                                             "_xsrf": s.cookies.get("_xsrf")}, timeout=30)
    assert r.status_code == 200 and "/hub/login" not in r.url, r.text[:500]
    return s


def test_rest_api_refuses_bad_options_and_starts_nothing(hub_factory, unix_user, cat_file):
    hub = hub_factory(hub_config(cat_file))
    name = unix_user()
    hub.create_user(name, groups=["course-a"])
    cases = [
        ({"template": "nope"}, "There is no template named 'nope'."),
        ({"template": "course-b-only"}, "You may not use template 'course-b-only'."),
        ({"template": "local-mock", "cpu": 8}, "cpu 8 is outside 0.5..2"),
        ({"template": "local-mock", "memory_mb": "lots"}, "memory_mb must be a number"),
        ({"template": "local-mock", "gpus": 1}, "has no gpus choice"),
        ({"template": "local-mock", "lifetime_minutes": 10}, "has no session length choice"),
        ({"template": "local-mock", "colour": "red"}, "Unknown option(s) 'colour'"),
    ]
    for options, message in cases:
        for path in (f"/users/{name}/server", f"/users/{name}/servers/named"):
            r = hub.api("POST", path, json={"user_options": options})
            assert r.status_code == 400, (options, r.status_code, r.text)
            assert message in r.json()["message"], r.json()
    assert hub.user(name)["servers"] == {}
    assert processes_of(name) == []
    assert "Calling Spawner.start" not in hub.log_text()


def test_local_spawn_named_servers_and_plumbing(hub_factory, unix_user, cat_file):
    hub = hub_factory(hub_config(cat_file))
    name = unix_user()
    hub.create_user(name)
    hub.spawn(name, user_options={"template": "local-mock", "cpu": 1.5, "memory_mb": 256})
    hub.spawn(name, "second", user_options={"template": "local-other"})

    env = server_env(hub, name)
    assert env["WHO"] == f"{name}/"
    assert env["CPU_LIMIT"] == "1.5" and env["MEM_LIMIT"] == str(256 * 1024 * 1024)
    assert env["HOME"] == f"/home/{name}" and env["JUPYTERHUB_SERVICE_PREFIX"] == f"/user/{name}/"
    env2 = server_env(hub, name, "second")
    assert env2["WHO"] == "other" and env2["JUPYTERHUB_SERVER_NAME"] == "second"
    assert env2["JUPYTERHUB_SERVICE_PREFIX"] == f"/user/{name}/second/"

    servers = hub.user(name)["servers"]
    assert servers[""]["state"]["multiple"]["template"] == "local-mock"
    assert servers["second"]["state"]["multiple"]["template"] == "local-other"
    assert servers[""]["user_options"]["cpu"] == 1.5
    assert len(processes_of(name)) == 2

    hub.stop_server(name, "second")
    hub.stop_server(name)
    wait_until(lambda: processes_of(name) == [], timeout=20, message="notebook processes gone")


def test_hot_reload_while_the_hub_runs(hub_factory, unix_user, cat_file):
    hub = hub_factory(hub_config(cat_file, 'c.Authenticator.admin_users = {"boss"}'))
    name = unix_user()
    hub.create_user(name)
    user, boss = login(hub, name), login(hub, "boss")

    form = user.get(f"{hub.url}/hub/spawn", timeout=30).text
    assert "Local (mock server)" in form and "Added later" not in form
    assert "course-b-only" not in form  # not in course-b

    added = {**catalogue()["templates"][1], "name": "added", "display_name": "Added later"}
    write_catalogue(cat_file, catalogue(templates_extra=[added]))
    assert "Added later" in user.get(f"{hub.url}/hub/spawn", timeout=30).text

    broken = catalogue(templates_extra=[{**added, "resource_type": "cloud"}])
    write_catalogue(cat_file, broken)
    form = user.get(f"{hub.url}/hub/spawn", timeout=30).text
    assert "Added later" in form and "ms-catalogue-error" not in form
    admin_form = boss.get(f"{hub.url}/hub/spawn", timeout=30).text
    assert "ms-catalogue-error" in admin_form
    assert f"{cat_file}: at /templates/3/resource_type: &#x27;cloud&#x27; is not one of" in admin_form
    assert "Template catalogue has errors" in hub.log_text()

    # the last good catalogue stays in force for spawns too
    hub.spawn(name, user_options={"template": "added"})
    assert server_env(hub, name)["WHO"] == "other"
    hub.stop_server(name)


def test_form_spawn_preselects_last_choice(hub_factory, unix_user, cat_file):
    hub = hub_factory(hub_config(cat_file))
    name = unix_user()
    hub.create_user(name)
    s = login(hub, name)
    r = s.post(f"{hub.url}/hub/spawn", data={
        "_xsrf": s.cookies.get("_xsrf"), "template": "local-mock", "provider": "",
        "local-mock.cpu": "9", "local-mock.memory_mb": "256"}, timeout=30)
    assert r.status_code == 400 and "cpu 9 is outside 0.5..2" in r.text, (r.history, r.url, r.text[-3000:])
    assert hub.user(name)["servers"] == {}

    r = s.post(f"{hub.url}/hub/spawn", data={
        "_xsrf": s.cookies.get("_xsrf"), "template": "local-mock", "provider": "",
        "local-mock.cpu": "0.5", "local-mock.memory_mb": "256"}, timeout=60)
    assert r.status_code == 200
    hub.wait_for_ready(name)
    assert hub.user(name)["servers"][""]["user_options"] == {
        "template": "local-mock", "provider": "local", "cpu": 0.5, "memory_mb": 256}
    hub.stop_server(name)
    form = s.get(f"{hub.url}/hub/spawn", timeout=30).text
    assert 'value="local-mock" checked' in form
    assert 'name="local-mock.cpu" value="0.5"' in form


def test_restart_keeps_server_and_its_template_version(hub_factory, unix_user, cat_file):
    hub = hub_factory(hub_config(cat_file))
    name = unix_user()
    hub.create_user(name)
    hub.spawn(name, user_options={"template": "local-mock"})
    version = hub.user(name)["servers"][""]["state"]["multiple"]["catalogue_version"]
    pids = processes_of(name)

    write_catalogue(cat_file, catalogue(env={"EXTRA": "new"}))
    hub.restart()
    model = hub.user(name)["servers"][""]
    assert model["ready"] and model["state"]["multiple"]["catalogue_version"] == version
    env = server_env(hub, name)
    assert "EXTRA" not in env and env["WHO"] == f"{name}/"
    assert processes_of(name) == pids

    hub.stop_server(name)
    wait_until(lambda: processes_of(name) == [], timeout=20, message="notebook process gone")
    hub.spawn(name, user_options={"template": "local-mock"})
    assert server_env(hub, name)["EXTRA"] == "new"
    hub.stop_server(name)


def test_session_expires_also_across_restart(hub_factory, unix_user, cat_file):
    write_catalogue(cat_file, catalogue(lifetime={"default": 0.1, "max": 0.5}))
    hub = hub_factory(hub_config(cat_file))
    name = unix_user()
    hub.create_user(name)

    started = time.monotonic()
    hub.spawn(name, user_options={"template": "local-mock"})  # 6 s default
    wait_until(lambda: hub.server_model(name) is None, timeout=40, message="expired server stopped")
    assert time.monotonic() - started >= 6
    wait_until(lambda: processes_of(name) == [], timeout=20, message="expired process gone")

    hub.spawn(name, user_options={"template": "local-mock", "lifetime_minutes": 0.4})  # 24 s
    deadline = hub.user(name)["servers"][""]["state"]["multiple"]["deadline"]
    hub.restart()
    assert hub.server_model(name)["ready"]
    wait_until(lambda: hub.server_model(name) is None, timeout=60, message="expired server stopped after restart")
    assert time.time() >= deadline
    wait_until(lambda: processes_of(name) == [], timeout=20, message="expired process gone")
    assert "ran out" in hub.log_text()
