"""MultipleSpawner in a real JupyterHub (with CHP): REST validation, local spawns, named
servers, group overrides, delete_forever, hot reload, hub restart with a changed catalogue,
progress events, failures and the child's timeouts, session expiry.

Local templates run ``jupyterhub.tests.mocksu`` (a stand-in single-user server that answers
``/env`` with its environment) as a real Unix user through LocalProcessSpawner or one of the
small child spawners of ``child_spawners.py``.
"""

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.fixtures.procs import wait_until
from tests.integration.child_spawners import ALLOWED_SPAWNER_CLASSES, HUB_ENV, PREFIX

PY = sys.executable
MOCKSU = [PY, "-m", "jupyterhub.tests.mocksu"]


def template(name, spawner_class="jupyterhub.spawner.LocalProcessSpawner", **fields):
    """A local template running the mock server through ``spawner_class``; ``fields`` on top
    (``kwargs`` goes into ``spawner.kwargs``)."""
    kwargs = {"cmd": MOCKSU, **fields.pop("kwargs", {})}
    return {"name": name, "resource_type": "local", "providers": ["local"],
            "spawner": {"class": spawner_class, "kwargs": kwargs}, **fields}


def catalogue(templates_extra=(), env=None, lifetime=None, marker=None):
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
    if marker:
        other["spawner"] = {"class": PREFIX + "MarkerSpawner",
                            "kwargs": {"cmd": MOCKSU, "marker_path": str(marker)}}
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


def start_hub(hub_factory, cat_file, extra=""):
    """A hub with MultipleSpawner on ``cat_file`` that can import the test child spawners."""
    return hub_factory(hub_config(cat_file, extra), env=HUB_ENV)


def hub_config(cat_file, extra=""):
    return f"""
c.JupyterHub.spawner_class = "multiple"
c.JupyterHub.allow_named_servers = True
c.MultipleSpawner.catalogue_paths = [{str(cat_file)!r}]
c.MultipleSpawner.catalogue_check_interval = 0
c.MultipleSpawner.lifetime_grace = 0
c.MultipleSpawner.allowed_spawner_classes = {ALLOWED_SPAWNER_CLASSES!r}
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


def test_rest_api_refuses_bad_options_and_starts_nothing(hub_factory, unix_user, cat_file, tmp_path):
    """Every refusal is a 400 with its message on the default and a named server, before the
    operator's pre_spawn_hook runs (it runs for the one good spawn at the end)."""
    extra = [template("off", enabled=False),
             template("timed", lifetime_minutes={"default": 1, "min": 0.5, "max": 2})]
    write_catalogue(cat_file, catalogue(templates_extra=extra))
    hook_log = tmp_path / "pre_spawn_hook.log"
    hub = start_hub(hub_factory, cat_file, f"""
def pre_spawn_hook(spawner):
    with open({str(hook_log)!r}, "a") as f:
        f.write(f"{{spawner.user.name}}/{{spawner.name}} {{spawner.user_options}}\\n")
c.Spawner.pre_spawn_hook = pre_spawn_hook
""")
    name = unix_user()
    hub.create_user(name, groups=["course-a"])
    cases = [
        ({"template": "nope"}, "There is no template named 'nope'."),
        ({"template": "course-b-only"}, "You may not use template 'course-b-only'."),
        ({"template": "off"}, "Template 'off' is disabled."),
        ({"template": "local-mock", "cpu": 8}, "cpu 8 is outside 0.5..2"),
        ({"template": "local-mock", "memory_mb": "lots"}, "memory_mb must be a number"),
        ({"template": "local-mock", "gpus": 1}, "has no gpus choice"),
        ({"template": "local-mock", "lifetime_minutes": 10}, "has no session length choice"),
        ({"template": "timed", "lifetime_minutes": 3}, "lifetime_minutes 3 is outside 0.5..2 allowed by template 'timed'."),
        ({"template": "timed", "lifetime_minutes": 0.25}, "lifetime_minutes 0.25 is outside 0.5..2"),
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
    assert not hook_log.exists(), hook_log.read_text()

    # the hook is really configured: it runs for a good spawn, once
    hub.spawn(name, user_options={"template": "timed", "lifetime_minutes": 2})
    assert hook_log.read_text().splitlines() == [f"{name}/ {{'template': 'timed', 'lifetime_minutes': 2}}"]
    hub.stop_server(name)


def test_local_spawn_named_servers_and_plumbing(hub_factory, unix_user, cat_file, tmp_path):
    """Two named servers on different templates; group overrides reach the child below the
    template's values; deleting a named server calls its child's delete_forever."""
    marker = tmp_path / "deleted_forever"
    write_catalogue(cat_file, catalogue(marker=marker))
    hub = start_hub(hub_factory, cat_file, """
c.Spawner.group_overrides = {"01-course-a": {"groups": ["course-a"], "spawner_override": {
    "cpu_limit": 0.75, "environment": {"GROUP": "course-a"}}}}
""")
    name = unix_user()
    hub.create_user(name, groups=["course-a"])
    hub.spawn(name, user_options={"template": "local-mock", "cpu": 1.5, "memory_mb": 256})
    hub.spawn(name, "second", user_options={"template": "local-other"})

    env = server_env(hub, name)
    assert env["WHO"] == f"{name}/" and env["GROUP"] == "course-a"
    assert env["CPU_LIMIT"] == "1.5" and env["MEM_LIMIT"] == str(256 * 1024 * 1024)  # the choice wins
    assert env["HOME"] == f"/home/{name}" and env["JUPYTERHUB_SERVICE_PREFIX"] == f"/user/{name}/"
    env2 = server_env(hub, name, "second")
    assert env2["WHO"] == "other" and env2["JUPYTERHUB_SERVER_NAME"] == "second"
    assert env2["JUPYTERHUB_SERVICE_PREFIX"] == f"/user/{name}/second/"
    assert env2["CPU_LIMIT"] == "0.75" and env2["GROUP"] == "course-a"  # the group override

    servers = hub.user(name)["servers"]
    assert servers[""]["state"]["multiple"]["template"] == "local-mock"
    assert servers["second"]["state"]["multiple"]["template"] == "local-other"
    assert servers["second"]["state"]["multiple"]["child_kwargs"]["cpu_limit"] == 0.75
    assert servers[""]["user_options"]["cpu"] == 1.5
    assert len(processes_of(name)) == 2

    # DELETE with remove: the hub stops the server, then MultipleSpawner.delete_forever rebuilds
    # the last child (MarkerSpawner) from the state and forwards the call to it
    r = hub.api("DELETE", f"/users/{name}/servers/second", json={"remove": True})
    assert r.status_code in (202, 204), r.text
    wait_until(lambda: marker.exists(), timeout=30, message="child's delete_forever called")
    assert marker.read_text() == f"{name}/second\n"
    hub.stop_server(name)
    wait_until(lambda: processes_of(name) == [], timeout=20, message="notebook processes gone")
    assert marker.read_text() == f"{name}/second\n"  # stopping is not deleting


def test_hot_reload_while_the_hub_runs(hub_factory, unix_user, cat_file):
    hub = start_hub(hub_factory, cat_file, 'c.Authenticator.admin_users = {"boss"}')
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
    hub = start_hub(hub_factory, cat_file)
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


def test_restart_keeps_servers_and_their_template_version(hub_factory, unix_user, cat_file):
    """After a hub restart the running servers are rebuilt from their state, not the catalogue:
    one template's class and kwargs were changed, the other template was removed meanwhile.
    The new class (StuckSpawner) would report the server gone at the hub's start-up poll and
    stop nothing, so a rebuild from the catalogue fails this test."""
    hub = start_hub(hub_factory, cat_file)
    name = unix_user()
    hub.create_user(name)
    hub.spawn(name, user_options={"template": "local-mock"})
    hub.spawn(name, "other", user_options={"template": "local-other"})
    before = {server: hub.server_model(name, server)["state"]["multiple"] for server in ("", "other")}
    pids = processes_of(name)
    assert len(pids) == 2

    changed = catalogue()
    changed["templates"][0]["spawner"] = {"class": PREFIX + "StuckSpawner", "kwargs": {"start_timeout": 3}}
    changed["templates"][0]["environment"] = {"WHO": "changed"}
    changed["templates"] = [t for t in changed["templates"] if t["name"] != "local-other"]
    write_catalogue(cat_file, changed)
    hub.restart()
    # the new catalogue is in force...
    r = hub.api("POST", f"/users/{name}/servers/third", json={"user_options": {"template": "local-other"}})
    assert r.status_code == 400 and "There is no template named 'local-other'" in r.json()["message"]

    # ...but both servers are the ones they were: polled as running, reachable, same state
    for server in ("", "other"):
        model = hub.server_model(name, server)
        assert model["ready"], model
        assert model["state"]["multiple"] == before[server]
        assert model["state"]["multiple"]["child_class"] == "jupyterhub.spawner.LocalProcessSpawner"
    assert server_env(hub, name)["WHO"] == f"{name}/"
    assert server_env(hub, name, "other")["WHO"] == "other"
    assert processes_of(name) == pids

    # stop goes to the recorded LocalProcessSpawner, which ends the processes
    hub.stop_server(name)
    hub.stop_server(name, "other")
    wait_until(lambda: processes_of(name) == [], timeout=20, message="notebook processes gone")


def test_progress_stream_has_multiplespawners_phases_and_the_childs_events(hub_factory, unix_user, cat_file):
    """GET .../server/progress during a spawn: the hub's first event, MultipleSpawner's phase
    events, then the child's own (ProgressSpawner's start waits until they were read), then ready."""
    write_catalogue(cat_file, catalogue(templates_extra=[template("progress", PREFIX + "ProgressSpawner")]))
    hub = start_hub(hub_factory, cat_file, 'c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}')
    name = unix_user()
    hub.create_user(name)
    r = hub.api("POST", f"/users/{name}/server", json={"user_options": {"template": "progress"}})
    assert r.status_code == 202, r.text
    events = hub.progress(name)
    messages = [e["message"] for e in events]
    state = hub.server_model(name)["state"]["multiple"]
    expected = [
        "Server requested",
        f"Template progress (catalogue version {state['catalogue_version']}) on local",
        "Starting ProgressSpawner",
        "ProgressSpawner: preparing the process",
        "ProgressSpawner: launching",
    ]
    assert messages[:len(expected)] == expected, messages
    assert events[-1].get("ready") and messages[-1].startswith("Server ready at"), events
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress), progress
    assert "nobody read the progress events" not in hub.log_text()
    hub.stop_server(name)


def test_failures_and_the_childs_timeouts_reach_the_user(hub_factory, unix_user, cat_file):
    """The child's start_timeout/http_timeout count, not c.Spawner's (120 s/90 s here): a child
    whose start hangs fails after its 5 s with MultipleSpawner's message naming the step; a
    server that never answers fails after its 5 s with the hub's message. Both messages reach
    the progress stream and the spawn-pending page; nothing is left running."""
    extra = [template("stuck", PREFIX + "StuckSpawner", kwargs={"start_timeout": 5}),
             template("silent", kwargs={"cmd": ["/bin/sleep", "600"], "http_timeout": 5})]
    write_catalogue(cat_file, catalogue(templates_extra=extra))
    hub = start_hub(hub_factory, cat_file, 'c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}')
    name = unix_user()
    hub.create_user(name)
    session = login(hub, name)
    started = time.monotonic()
    for server, chosen in (("", "stuck"), ("silent", "silent")):
        r = hub.api("POST", hub._server_path(name, server), json={"user_options": {"template": chosen}})
        assert r.status_code == 202, r.text
    # both streams open while both spawns are pending, as two browser tabs would: JupyterHub
    # answers 400 to a stream opened while it is stopping a server it gave up on
    with ThreadPoolExecutor(2) as pool:
        stuck_events, silent_events = pool.map(lambda server: hub.progress(name, server), ("", "silent"))
    elapsed = time.monotonic() - started
    assert 5 <= elapsed < 40, elapsed  # the children's 5 s, not the hub's 120/90 s

    stuck = "The start step failed: StuckSpawner did not start within 5 seconds (start_timeout)"
    assert stuck_events[-1]["failed"] and stuck_events[-1]["message"] == f"Spawn failed: {stuck}", stuck_events
    assert any(e["message"] == "Starting StuckSpawner" for e in stuck_events)
    silent = silent_events[-1]
    assert silent["failed"] and "didn't respond in 5 seconds" in silent["message"], silent_events

    page = session.get(f"{hub.url}/hub/spawn-pending/{name}", timeout=30)
    assert page.status_code == 500 and stuck in page.text and "SpawnError" not in page.text, page.text[-2000:]
    assert hub.user(name)["servers"] == {}
    wait_until(lambda: processes_of(name) == [], timeout=20, message="the silent server's process gone")
    assert "Unhandled error starting" not in hub.log_text()


def test_session_expires(hub_factory, unix_user, cat_file):
    """The session timer stops the server when its time is up, not before (expiry across a hub
    restart: test_multiple_restart.py)."""
    write_catalogue(cat_file, catalogue(lifetime={"default": 0.1, "max": 0.5}))
    hub = start_hub(hub_factory, cat_file)
    name = unix_user()
    hub.create_user(name)

    started = time.monotonic()
    hub.spawn(name, user_options={"template": "local-mock"})  # 6 s default
    wait_until(lambda: hub.server_model(name) is None, timeout=40, message="expired server stopped")
    assert time.monotonic() - started >= 6
    wait_until(lambda: processes_of(name) == [], timeout=20, message="expired process gone")
    assert "ran out" in hub.log_text()
