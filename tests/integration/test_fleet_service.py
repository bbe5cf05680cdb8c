"""The fleet service and ``multiplespawner-servers`` behind a real hub with running servers.

One hub for the module: MultipleSpawner with two course templates (course-a's, course-b's;
children are JupyterHub's mock single-user server run by SimpleLocalProcessSpawner, so no Unix
accounts), the fleet service with its own narrow role, a hub admin (``boss``), a course-a
manager (``ta``: ``custom:servers:manage!group=course-a``) and a user with no such scope.
Four servers run; every filter is checked through REST, refusals through REST and the CLI,
and the two bulk stops (the manager's course, then the admin's rest) on the real processes
and in the audit file. Tests run in file order: the stops come last.
"""

import asyncio
import json
import os
import secrets
import subprocess
import threading
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multiplespawner.fleet.servers import parse_time
from tests.fixtures.editor import hub_session
from tests.fixtures.fleet import CLI, alive, hub_config, pid_of, write_catalogue
from tests.fixtures.hub import Hub
from tests.fixtures.net import free_port
from tests.fixtures.procs import wait_until
from tests.fixtures.sshd import make_client_key

HUB_ID = f"fleet-test-{secrets.token_hex(4)}"
#: user, server name, template, provider
SERVERS = [("alice", "", "course-a-lab", "local"), ("bob", "extra", "course-a-lab", "local"),
           ("carol", "", "course-b-lab", "second"), ("dave", "", "course-b-lab", "local")]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, stalled_image):
    folder = tmp_path_factory.mktemp("fleet")
    folder.chmod(0o755)
    key_path, public = make_client_key(folder)
    # a pool host nobody listens on: the tests need its claims, never a notebook on it
    pool_host = {"address": "127.0.0.1", "port": free_port(), "host_key": public}
    catalogue = write_catalogue(folder, pool_host, key_path, machine_image=stalled_image)
    hub = Hub(hub_config(catalogue, hub_id=HUB_ID))
    try:
        hub.start()
        for name, groups in (("boss", []), ("ta", ["course-a-tas"]), ("nobody", []),
                             ("alice", ["course-a"]), ("bob", ["course-a"]), ("carol", ["course-b"]),
                             ("dave", ["course-b"]), ("erin", ["course-a"]), ("frank", ["course-b"]),
                             ("gina", ["course-b"])):
            hub.create_user(name, groups=groups)
        for user, server, tmpl, provider in SERVERS:
            hub.spawn(user, server, {"template": tmpl, "provider": provider})
        base = f"{hub.url}/services/fleet/"
        wait_until(lambda: requests.get(base + "api/servers", timeout=5).status_code == 403,
                   timeout=60, message="fleet service up")
        tokens = {}
        for name in ("boss", "ta", "nobody"):
            r = hub.api("POST", f"/users/{name}/tokens", json={"note": "fleet test"})
            r.raise_for_status()
            tokens[name] = r.json()["token"]
        hub.pool_host = f"127.0.0.1:{pool_host['port']}"
        yield hub, base, tokens, catalogue
    finally:
        hub.remove()


def call(base, token, method, path, **kw):
    return requests.request(method, base + "api/" + path, headers={"Authorization": f"token {token}"},
                            timeout=120, **kw)


def names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["server"] for r in response.json()["servers"]]


def cli(base, token, *args, stdin=""):
    env = {**os.environ, "JUPYTERHUB_API_TOKEN": token, "MULTIPLESPAWNER_FLEET_URL": base}
    return subprocess.run([CLI, *args], input=stdin, env=env, capture_output=True, text=True, timeout=300)


def test_an_admin_lists_every_server_with_its_template_provider_and_state(fleet):
    hub, base, tokens, _ = fleet
    r = call(base, tokens["boss"], "GET", "servers")
    rows = {row["server"]: row for row in r.json()["servers"]}
    assert sorted(rows) == ["alice/", "bob/extra", "carol/", "dave/"]
    carol = rows["carol/"]
    assert (carol["template"], carol["provider"], carol["resource_type"], carol["state"], carol["tags"],
            carol["groups"], carol["machine"]) == ("course-b-lab", "second", "local", "running", ["course-b"],
                                                   ["course-b"], None)
    assert carol["started"] and carol["last_activity"] and carol["catalogue_version"]
    assert "child_state" not in json.dumps(r.json())  # spawner state itself never leaves the service


@pytest.mark.parametrize("query, expected", [
    ({"template": "course-a-lab"}, ["alice/", "bob/extra"]),
    ({"template": ["course-a-lab", "course-b-lab"], "provider": "second"}, ["carol/"]),
    ({"group": "course-b"}, ["carol/", "dave/"]),
    ({"state": "running", "server": ["alice", "bob/extra"]}, ["alice/", "bob/extra"]),
    ({"state": ["pending", "stopping"]}, []),
    ({"older_than": "1s"}, ["alice/", "bob/extra", "carol/", "dave/"]),
    ({"older_than": "1d"}, []),
    ({"idle_for": "1d"}, []),
    ({"idle_for": "0s", "server": "dave/"}, ["dave/"]),
    ({"host": "no-such-host"}, []),
])
def test_filters(fleet, query, expected):
    hub, base, tokens, _ = fleet
    if "older_than" in query:
        time.sleep(1)  # every server is older than one second
    assert names(call(base, tokens["boss"], "GET", "servers", params=query)) == expected


def test_a_course_manager_sees_and_may_name_only_their_course(fleet):
    hub, base, tokens, _ = fleet
    assert names(call(base, tokens["ta"], "GET", "servers")) == ["alice/", "bob/extra"]
    r = call(base, tokens["ta"], "GET", "servers", params={"template": "course-b-lab"})
    assert r.status_code == 403 and "course-a" in r.json()["message"] and "course-b-lab" in r.json()["message"]
    r = call(base, tokens["ta"], "POST", "servers/stop", json={"filter": {"server": "carol/"}})
    assert r.status_code == 403 and "carol/" in r.json()["message"]
    out = cli(base, tokens["ta"], "stop", "--template", "course-b-lab", "--yes")
    assert out.returncode == 1 and "403" in out.stderr and "course-b-lab" in out.stderr
    assert hub.server_model("carol") is not None and alive(pid_of(hub, "carol", ""))


def test_nobody_else_gets_anything(fleet):
    hub, base, tokens, _ = fleet
    for method, path in (("GET", "servers"), ("POST", "servers/stop"), ("GET", "audit")):
        r = call(base, tokens["nobody"], method, path, json={"all": True} if method == "POST" else None)
        assert r.status_code == 403 and "custom:servers:manage" in r.json()["message"]
    r = requests.get(base + "api/servers", timeout=30)  # no token at all
    assert r.status_code == 403 and "token" in r.json()["message"]


@pytest.mark.parametrize("method, path, kw, status, words", [
    ("GET", "servers", {"params": {"colour": "red"}}, 400, "unknown filter"),
    ("GET", "servers", {"params": {"state": "asleep"}}, 400, "not one of"),
    ("GET", "servers", {"params": {"older_than": "soon"}}, 400, "not a duration"),
    ("GET", "servers", {"params": {"idle_for": "9" * 400}}, 400, "at most"),
    ("POST", "servers/stop", {"data": b"{not json"}, 400, "JSON object"),
    ("POST", "servers/stop", {"json": ["all"]}, 400, "JSON object"),
    ("POST", "servers/stop", {"json": {}}, 400, "needs a filter"),
    ("POST", "servers/stop", {"json": {"filter": {"template": [1]}}}, 400, "non-empty string"),
    ("POST", "servers/stop", {"json": {"filter": "course-a-lab"}}, 400, "object"),
    ("POST", "servers/stop", {"json": {"all": "yes"}}, 400, "true or false"),
    ("POST", "servers/stop", {"json": {"all": True, "concurrency": 0}}, 400, "concurrency"),
    ("POST", "servers/stop", {"json": {"all": True, "only": "alice/"}}, 400, "only"),
    ("POST", "servers/stop", {"json": {"all": True, "force": True}}, 400, "unknown field"),
    ("POST", "servers/stop", {"data": b"[" * 100000}, 413, "at most"),
    ("GET", "audit", {"params": {"limit": "many"}}, 400, "whole number"),
])
def test_every_bad_input_is_a_4xx_with_a_message_and_stops_nothing(fleet, method, path, kw, status, words):
    hub, base, tokens, _ = fleet
    r = call(base, tokens["boss"], method, path, **kw)
    assert r.status_code == status and words in r.json()["message"], r.text
    assert len(names(call(base, tokens["boss"], "GET", "servers"))) == 4


def test_a_course_manager_stops_their_course_from_the_cli(fleet):
    hub, base, tokens, catalogue = fleet
    pids = {s: pid_of(hub, u, n) for u, n, _, _ in SERVERS for s in [f"{u}/{n}"]}
    out = cli(base, tokens["ta"], "stop", "--template", "course-a-lab", "--dry-run")
    assert out.returncode == 0 and "2 servers would be stopped" in out.stdout, out.stderr
    out = cli(base, tokens["ta"], "stop", "--template", "course-a-lab", stdin="n\n")
    assert out.returncode == 1 and "nothing stopped" in out.stdout
    assert all(alive(p) for p in pids.values())

    out = cli(base, tokens["ta"], "stop", "--all", "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "alice/: stopped" in out.stdout and "bob/extra: stopped" in out.stdout and "2 stopped" in out.stdout
    assert not alive(pids["alice/"]) and not alive(pids["bob/extra"])
    assert alive(pids["carol/"]) and alive(pids["dave/"])  # another course's: untouched by --all
    assert hub.server_model("alice") is None and hub.server_model("bob", "extra") is None

    (record,) = [json.loads(line) for line in (catalogue / ".fleet-history.jsonl").read_text().splitlines()]
    assert (record["actor"], record["action"], record["all"], record["servers"]) == (
        "ta", "stop", True, ["alice/", "bob/extra"])
    assert [r["result"] for r in record["results"]] == ["stopped", "stopped"] and record["time"]
    assert (catalogue / ".fleet-history.jsonl").stat().st_mode & 0o077 == 0


def test_an_admin_lists_as_json_and_stops_the_rest(fleet):
    hub, base, tokens, catalogue = fleet
    out = cli(base, tokens["boss"], "list", "--json", "--group", "course-b")
    assert out.returncode == 0, out.stderr
    assert [r["server"] for r in json.loads(out.stdout)] == ["carol/", "dave/"]
    out = cli(base, tokens["boss"], "list")
    assert out.returncode == 0 and "carol/" in out.stdout and "course-b-lab" in out.stdout and "2 servers" in out.stdout
    r = call(base, tokens["boss"], "POST", "servers/stop",
             json={"filter": {"template": "course-b-lab"}, "only": ["carol/", "zed/"], "dry_run": True})
    assert [x["server"] for x in r.json()["results"]] == ["carol/"]  # what was confirmed, nothing more
    pids = [pid_of(hub, "carol", ""), pid_of(hub, "dave", "")]
    out = cli(base, tokens["boss"], "stop", "--state", "running", "--concurrency", "2", stdin="y\n")
    assert out.returncode == 0 and "2 stopped" in out.stdout, out.stdout + out.stderr
    assert not any(alive(p) for p in pids)
    assert names(call(base, tokens["boss"], "GET", "servers")) == []

    everyone = call(base, tokens["boss"], "GET", "audit").json()["audit"]
    assert [(a["actor"], a["filter"]) for a in everyone] == [("boss", {"state": ["running"]}), ("ta", {})]
    mine = call(base, tokens["ta"], "GET", "audit").json()["audit"]
    assert [a["actor"] for a in mine] == ["ta"]
    # a server confirmed but ended before the stop: reported, not an error
    r = call(base, tokens["boss"], "POST", "servers/stop", json={"all": True, "only": ["carol/"]})
    assert r.json()["results"] == [{"server": "carol/", "result": "already gone", "reason": r.json()["results"][0]["reason"]}]
    assert r.json()["counts"] == {"already gone": 1}


def test_notify_shows_the_message_on_the_users_pages_escaped(fleet):
    hub, base, tokens, _ = fleet
    hub.spawn("erin", "", {"template": "course-a-lab"})
    hub.spawn("frank", "", {"template": "course-b-lab"})
    try:
        message = "The lab closes at 17:00: <b>save</b> your work"
        out = cli(base, tokens["ta"], "notify", message, "--all", "--dry-run")
        assert out.returncode == 0 and "erin/: would notify" in out.stdout and "frank" not in out.stdout, out.stdout
        out = cli(base, tokens["ta"], "notify", message, "--server", "frank/", "--yes")
        assert out.returncode == 1 and "403" in out.stderr and "frank" in out.stderr
        for body, words in (({"all": True, "message": ""}, "message"), ({"all": True, "message": "a\nb"}, "one line"),
                            ({"all": True, "message": "x" * 501}, "500"),
                            ({"all": True, "message": "hi", "expires_minutes": -1}, "expires_minutes")):
            r = call(base, tokens["ta"], "POST", "servers/notify", json=body)
            assert r.status_code == 400 and words in r.json()["message"], r.text
        out = cli(base, tokens["ta"], "notify", message, "--template", "course-a-lab", "--yes")
        assert out.returncode == 0 and "erin/: notified" in out.stdout, out.stdout + out.stderr

        shown = "The lab closes at 17:00: &lt;b&gt;save&lt;/b&gt; your work"
        erin, frank = hub_session(hub, "erin"), hub_session(hub, "frank")
        home = lambda session: session.get(f"{hub.url}/hub/home", timeout=30).text  # noqa: E731
        wait_until(lambda: shown in home(erin), timeout=30, message="the notice on erin's home page")
        assert "<b>save</b>" not in home(erin) and shown not in home(frank)
        (record, *_) = call(base, tokens["boss"], "GET", "audit").json()["audit"]
        assert (record["actor"], record["action"], record["message"], record["servers"]) == (
            "ta", "notify", message, ["erin/"])
    finally:
        assert cli(base, tokens["boss"], "stop", "--server", "erin/", "--server", "frank/", "--yes").returncode == 0


def test_a_server_whose_start_failed_is_listed_failed_with_the_reason(fleet):
    hub, base, tokens, _ = fleet
    r = hub.api("POST", "/users/erin/servers/broken", json={"template": "course-a-broken"})
    if r.status_code != 500:  # the failure came after the hub's slow_spawn_timeout
        wait_until(lambda: hub.server_model("erin", "broken") is None, timeout=60, message="failed start cleaned up")
    rows = call(base, tokens["ta"], "GET", "servers", params={"state": "failed"}).json()["servers"]
    assert [(r["server"], r["state"], r["template"]) for r in rows] == [("erin/broken", "failed", "course-a-broken")]
    assert "/nonexistent/notebook" in rows[0]["failure"]["message"] and rows[0]["failure"]["time"], rows
    out = cli(base, tokens["ta"], "list")
    assert out.returncode == 0 and "erin/broken" in out.stdout and "failed" in out.stdout, out.stdout
    assert names(call(base, tokens["ta"], "GET", "servers", params={"state": "running"})) == []


def test_a_server_the_hub_gave_up_on_is_listed_failed_with_the_http_timeout(fleet):
    """course-a-silent's process runs but never answers: the hub stops it after http_timeout
    (3 s), and the fleet lists it failed with that reason."""
    hub, base, tokens, _ = fleet
    r = hub.api("POST", "/users/erin/servers/silent", json={"template": "course-a-silent"})
    assert r.status_code in (202, 500), r.text
    wait_until(lambda: hub.server_model("erin", "silent") is None, timeout=60, message="the hub gave up")
    rows = [r for r in call(base, tokens["ta"], "GET", "servers", params={"state": "failed"}).json()["servers"]
            if r["server"] == "erin/silent"]
    assert [(r["state"], r["template"]) for r in rows] == [("failed", "course-a-silent")], rows
    assert "did not answer within 3 seconds (http_timeout)" in rows[0]["failure"]["message"], rows


def test_a_session_extended_outlives_its_deadline_and_one_past_the_maximum_is_refused(fleet):
    """course-a-short: 6 s sessions, at most 15 s. Extended by 6 s, the server outlives its
    own deadline (and the expiry timer's grace), then ends at the new one."""
    hub, base, tokens, catalogue = fleet
    hub.spawn("erin", "", {"template": "course-a-short"})
    pid = pid_of(hub, "erin", "")
    out = cli(base, tokens["ta"], "extend", "--server", "erin/", "--minutes", "0.1", "--yes")
    assert out.returncode == 0 and "erin/: extended (until" in out.stdout, out.stdout + out.stderr
    (row,) = call(base, tokens["ta"], "GET", "servers", params={"server": "erin/"}).json()["servers"]
    own = hub.server_model("erin")["state"]["multiple"]["deadline"]
    assert parse_time(row["deadline"]).timestamp() - own == pytest.approx(6, abs=0.01)
    assert parse_time(row["latest_deadline"]).timestamp() - own == pytest.approx(9, abs=0.01)

    r = call(base, tokens["ta"], "POST", "servers/extend", json={"filter": {"server": "erin/"}, "minutes": 1})
    assert r.status_code == 409 and "maximum session length" in r.json()["message"], r.text
    r = call(base, tokens["ta"], "POST", "servers/extend", json={"filter": {"server": "erin/"}, "minutes": "9"})
    assert r.status_code == 400 and "minutes" in r.json()["message"], r.text
    out = cli(base, tokens["ta"], "extend", "--template", "course-b-lab", "--minutes", "1", "--yes")
    assert out.returncode == 1 and "403" in out.stderr and "course-b-lab" in out.stderr
    out = cli(base, tokens["boss"], "extend", "--all", "--minutes", "1", "--yes")  # bulk: a result per server
    assert out.returncode == 1 and "erin/: refused" in out.stdout and "at most 0 more minutes" in out.stdout
    assert "0 servers would be extended" in out.stdout  # all refused: nothing sent, nothing recorded

    time.sleep(max(0.0, own + 2 + 2 - time.time()))  # past the own deadline and the 2 s grace
    assert alive(pid) and hub.server_model("erin")["ready"]
    wait_until(lambda: hub.server_model("erin") is None, timeout=60, message="the extended session ended")
    assert time.time() >= own + 6 and not alive(pid)
    assert "Session of erin extended until" in hub.log_text()
    (record, *_) = call(base, tokens["boss"], "GET", "audit").json()["audit"]
    assert (record["actor"], record["action"], record["minutes"], record["servers"], record["results"][0]["result"]) == (
        "ta", "extend", 0.1, ["erin/"], "extended")


def plant_orphan(image: str, folder) -> str:
    """A container machine labelled for this hub and no server (as a hub that died between
    creating a machine and storing it leaves one); its id."""
    from multiplespawner.machines.credentials import CredentialStore
    from multiplespawner.providers.base import MachineSpec, Resources
    from multiplespawner.providers.docker import DockerProvider
    from multiplespawner.providers.identity import HUB_LABEL

    async def create():
        store = CredentialStore(base_dir=str(folder))
        creds = await store.create("orphan")
        spec = MachineSpec(name=f"orphan-{secrets.token_hex(4)}", deployment={"image": image},
                           resources=Resources(cpu=0.5, memory_mb=256), ssh_user="jhadmin",
                           authorized_key=creds.client_public_key, host_key_private=creds.host_private_key,
                           labels={HUB_LABEL: HUB_ID, "org.jupyterhub-multiplespawner.user": "ghost"})
        machine = await DockerProvider().create(spec)
        await store.remove(creds)
        return machine.id

    return asyncio.run(create())


def test_machines_lists_owners_and_reap_removes_only_the_orphan(fleet, docker_engine, stalled_image, tmp_path):
    """A real container machine being made for erin (its sshd never answers, so the spawn
    stays in its wait step: a machine whose creation is under way is in no server's state yet)
    and a planted orphan: ``machines`` tells them apart, ``reap`` removes the orphan only,
    through the hub's own reaper."""
    hub, base, tokens, catalogue = fleet
    orphan = None
    spawning = threading.Thread(target=hub.api, args=("POST", "/users/erin/server"),
                                kwargs={"json": {"template": "course-b-vm"}, "timeout": 60})
    spawning.start()
    try:
        erins = lambda: [c.id for c in docker_engine.containers.list(  # noqa: E731
            all=True, filters={"label": [f"org.jupyterhub-multiplespawner.hub={HUB_ID}",
                                         "org.jupyterhub-multiplespawner.user=erin"]})]
        wait_until(lambda: len(erins()) == 1, timeout=120, message="erin's machine created")
        (owned,) = erins()
        (row,) = call(base, tokens["boss"], "GET", "servers", params={"provider": "docker"}).json()["servers"]
        assert (row["server"], row["state"], row["resource_type"], row["template"]) == (
            "erin/", "pending", "virtual_machine", "course-b-vm")
        # planted after the hub's start-up reaper ran (before erin's machine was created)
        orphan = plant_orphan(stalled_image, tmp_path)
        out = cli(base, tokens["ta"], "machines")
        assert out.returncode == 1 and "403" in out.stderr and "every course" in out.stderr
        for method, path in (("GET", "machines"), ("POST", "machines/reap")):  # the hub's own API, directly
            r = requests.request(method, f"{hub.api_url}/multiplespawner/{path}", json={"dry_run": False},
                                 headers={"Authorization": f"token {tokens['ta']}"}, timeout=30)
            assert r.status_code == 403 and "custom:machines:manage" in r.json()["message"], r.text
        out = cli(base, tokens["boss"], "machines", "--json")
        assert out.returncode == 0, out.stderr
        machines = {m["id"]: m for m in json.loads(out.stdout)["machines"]}
        assert set(machines) == {owned, orphan}
        assert machines[orphan]["orphan"] and machines[orphan]["labelled_for"] == "ghost/?"
        assert not machines[owned]["orphan"] and machines[owned]["labelled_for"] == "erin/"

        out = cli(base, tokens["boss"], "reap", "--dry-run")
        assert out.returncode == 0 and orphan[:12] in out.stdout and owned[:12] not in out.stdout, out.stdout
        assert "1 machines would be reaped" in out.stdout and docker_engine.containers.get(orphan)
        out = cli(base, tokens["boss"], "reap", "--yes")
        assert out.returncode == 0 and f"docker {orphan[:12]}: reaped" in out.stdout, out.stdout + out.stderr
        assert erins() == [owned] and orphan not in [c.id for c in docker_engine.containers.list(all=True)]
        assert f"Reaping docker machine {orphan}" in hub.log_text()
        r = call(base, tokens["boss"], "POST", "machines/reap", json={"dry_run": "no"})
        assert r.status_code == 400 and "dry_run" in r.json()["message"]
        (record, *_) = call(base, tokens["boss"], "GET", "audit").json()["audit"]
        assert (record["action"], [m["id"] for m in record["reaped"]]) == ("reap", [orphan])
    finally:
        # the start request answers 202 after the hub's slow_spawn_timeout; a stop before that
        # makes JupyterHub log the interrupted request's traceback
        spawning.join(timeout=90)
        hub.api("DELETE", "/users/erin/server", timeout=120)
        for container in docker_engine.containers.list(all=True, filters={"id": orphan}) if orphan else []:
            container.remove(force=True)
    wait_until(lambda: hub.server_model("erin") is None and not erins(), timeout=120,
               message="erin's spawn stopped and its machine removed")


_texts = st.text(max_size=30) | st.sampled_from(["course-a-lab", "running", "1h", "0s", "alice/", "9" * 300, "evil\n"])
_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _texts
_values = st.recursive(_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                       max_leaves=12)
_keys = st.sampled_from(["template", "provider", "group", "state", "older_than", "idle_for", "host", "server",
                         "filter", "all", "only", "concurrency", "stop", "limit"]) | st.text(max_size=10)
_fleet_requests = st.tuples(
    st.sampled_from(["boss", "ta", "nobody"]),
    st.sampled_from(["list", "stop", "extend", "undrain", "audit"]),
    st.dictionaries(_keys, _values, max_size=4),  # a stop's body gets "dry_run": true: nothing is stopped
    st.lists(st.tuples(_keys, _texts), max_size=4),  # query arguments
    st.booleans(),  # send the body as JSON (else as raw text)
)


def test_fuzz_every_route_answers_4xx_with_a_message_never_5xx(fleet):
    """Fixed seed, bounded examples; runs after the stops (an undrain of a random host records
    an audit line) and before the drain test, whose hosts it never names."""
    hub, base, tokens, _ = fleet
    statuses = {}
    log_before = len(hub.log_text())  # earlier tests' hub-side failures are not the fuzz's

    def send(who, route, body, query, as_json):
        if route in ("list", "audit"):
            return call(base, tokens[who], "GET", "servers" if route == "list" else "audit", params=query)
        if route in ("stop", "extend"):
            body = {**body, "dry_run": True}
        path = f"servers/{route}" if route in ("stop", "extend") else "hosts/undrain"
        return call(base, tokens[who], "POST", path, **({"json": body} if as_json else {"data": repr(body)}))

    @settings(derandomize=True, max_examples=120, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(request=_fleet_requests)
    def check(request):
        r = send(*request)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code < 500, (request, r.status_code, r.text[:500])
        if r.status_code >= 400:
            assert r.json()["message"], r.text

    check()
    log = hub.log_text()[log_before:]
    assert "Traceback" not in log and "Uncaught exception" not in log, log[-4000:]
    assert statuses.get(400, 0) > 20 and statuses.get(403, 0) > 10 and statuses.get(200, 0) > 5, statuses


def test_a_spawn_waiting_in_line_is_listed_queued_and_stopped_like_any_other(fleet):
    hub, base, tokens, _ = fleet
    hub.spawn("frank", "", {"template": "course-b-line"})  # takes the template's only place
    waiting = threading.Thread(target=hub.api, args=("POST", "/users/gina/server"),
                               kwargs={"json": {"template": "course-b-line"}, "timeout": 60})
    waiting.start()  # the request waits in line (the hub answers 202 after its slow_spawn_timeout)
    try:
        wait_until(lambda: names(call(base, tokens["boss"], "GET", "servers", params={"state": "queued"})) == ["gina/"],
                   timeout=60, message="gina listed as queued")
        (row,) = call(base, tokens["boss"], "GET", "servers", params={"server": "gina"}).json()["servers"]
        assert row["queue_position"].startswith("1st in line for course-b-line"), row
        out = cli(base, tokens["boss"], "stop", "--state", "queued", "--yes")
        assert out.returncode == 0 and "gina/: stopped" in out.stdout, out.stdout + out.stderr
        wait_until(lambda: hub.server_model("gina") is None, timeout=60, message="the wait ended")
        assert hub.server_model("frank")["ready"]  # the running server of the template: untouched
        assert cli(base, tokens["boss"], "stop", "--server", "frank", "--yes").returncode == 0
    finally:
        waiting.join(timeout=90)


def test_a_drained_pool_host_takes_no_spawn_even_after_a_hub_restart(fleet):
    hub, base, tokens, catalogue = fleet
    host = hub.pool_host
    out = cli(base, tokens["ta"], "drain", host)  # a host serves every course: not a course manager's
    assert out.returncode == 1 and "403" in out.stderr and "every course" in out.stderr
    out = cli(base, tokens["boss"], "drain", host, "--stop", "--yes")
    assert out.returncode == 0 and f"{host}: drained" in out.stdout, out.stdout + out.stderr
    assert host in cli(base, tokens["boss"], "hosts").stdout
    for body, words in (({"host": "a b"}, "the body must be"), ({"host": host, "stop": 1}, "stop must be"),
                        ({"host": "x\n"}, "the body must be")):
        r = call(base, tokens["boss"], "POST", "hosts/drain", json=body)
        assert r.status_code == 400 and words in r.json()["message"], r.text

    r = hub.api("POST", "/users/erin/server", json={"template": "pool-lab"})
    assert r.status_code == 503 and "drained" in r.json()["message"], r.text
    hub.restart()
    wait_until(lambda: requests.get(base + "api/hosts", timeout=5).status_code == 403, timeout=60,
               message="fleet service up again")
    r = hub.api("POST", "/users/erin/server", json={"template": "pool-lab"})
    assert r.status_code == 503 and "drained" in r.json()["message"], r.text

    out = cli(base, tokens["boss"], "undrain", host)
    assert out.returncode == 0 and f"{host}: takes servers" in out.stdout, out.stdout + out.stderr
    hub.api("POST", "/users/erin/server", json={"template": "pool-lab"})
    # the claim goes through now; nothing listens on the host, so the spawn then fails
    wait_until(lambda: f"claimed pool host {host} of lab-pool" in hub.log_text(), timeout=60,
               message="pool host claimed after the undrain")
    wait_until(lambda: hub.server_model("erin") is None, timeout=120, message="failed spawn cleaned up")
    audit = [(a["actor"], a["action"], a.get("host")) for a in call(base, tokens["boss"], "GET", "audit").json()["audit"]]
    assert audit[:2] == [("boss", "undrain", host), ("boss", "drain", host)]
