"""Template quotas and the waiting line on a real hub (one hub for the module; children are
JupyterHub's mock single-user server run by SimpleLocalProcessSpawner, so no Unix accounts).

20 concurrent REST spawns for 2 places: exactly 2 run, 18 are refused with 429 and a message;
the line admits in order of arrival as places free and reports positions, and a wait longer
than the hub's start_timeout does not fail the spawn; a waiter can cancel; places come back
from servers found gone by poll and from failed spawns;
``queue_timeout`` ends a wait with its message; a per-user cap cannot be bypassed with named
servers; after a hub restart the running servers still hold their places, waiters are gone
(their users start again) and the line works on.
"""

import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from multiplespawner.catalogue import DEFAULT_SPAWNER_CLASSES
from tests.fixtures.editor import hub_session
from tests.fixtures.hub import Hub
from tests.fixtures.procs import wait_until

SIMPLE = "jupyterhub.spawner.SimpleLocalProcessSpawner"


def template(name, quota, home):
    return {"name": name, "display_name": f"{name.capitalize()} notebook", "resource_type": "local",
            "providers": ["local"], "quota": quota,
            "spawner": {"class": SIMPLE, "kwargs": {"cmd": [sys.executable, "-m", "jupyterhub.tests.mocksu"],
                                                    "home_dir_template": f"{home}/{{username}}"}}}


def with_kwargs(spec, **kwargs):
    spec["spawner"]["kwargs"].update(kwargs)
    return spec


#: the "line" template's child start_timeout; the hub's is 10 s more (HUB_TIMEOUT_MARGIN)
LINE_START_TIMEOUT = 15


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quota")
    folder.chmod(0o755)
    catalogue = folder / "catalogue.json"
    catalogue.write_text(json.dumps({
        "deployments": {"local": [{"name": "hub-host", "provider": "local"}]},
        "templates": [
            template("pair", {"running": 2}, folder),
            with_kwargs(template("line", {"running": 1, "queue": True, "queue_timeout": 600}, folder),
                        start_timeout=LINE_START_TIMEOUT),
            template("brief", {"running": 1, "queue": True, "queue_timeout": 3}, folder),
            template("solo", {"per_user": 1}, folder),
            template("gone", {"running": 1, "queue": True}, folder),
            {**template("broken", {"running": 1}, folder),
             "spawner": {"class": SIMPLE, "kwargs": {"cmd": [str(folder / "no-such-program")]}}},
        ],
    }))
    hub = Hub(f"""
c.JupyterHub.spawner_class = "multiple"
c.JupyterHub.allow_named_servers = True
c.JupyterHub.authenticate_prometheus = False
c.MultipleSpawner.catalogue_paths = [{str(catalogue)!r}]
c.MultipleSpawner.allowed_spawner_classes = {[*DEFAULT_SPAWNER_CLASSES, SIMPLE]!r}
c.Spawner.poll_interval = 2


def mark(spawner):  # stands for an LDAP account being made: must not run for a refused spawn
    with open({str(folder / "hooked")!r}, "a") as f:
        print(spawner.user.name, file=f)


c.Spawner.pre_spawn_hook = mark
""")
    hub.hooked = folder / "hooked"
    try:
        yield hub.start()
    finally:
        hub.remove()


@pytest.fixture
def quota_hub(hub):
    yield hub
    hub.stop_all_servers()


def gauge(hub, name, template):
    text = requests.get(f"{hub.url}/hub/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("template") == template:
                return sample.value
    return 0.0


def post(hub, user, template, server=""):
    return hub.api("POST", hub._server_path(user, server), json={"template": template}, timeout=60)


def in_background(hub, user, template):
    """Start a spawn whose request blocks (it waits in line); return the thread and its answer."""
    answer = {}

    def run():
        try:
            answer["r"] = post(hub, user, template)
        except requests.ConnectionError as e:  # the hub went away (restart test)
            answer["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, answer


def test_twenty_concurrent_spawns_for_two_places(quota_hub):
    hub = quota_hub
    users = [f"rush{i}" for i in range(20)]
    for user in users:
        hub.create_user(user)
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda u: post(hub, u, "pair"), users))
    started = [u for u, r in zip(users, answers) if r.status_code in (201, 202)]
    refused = [r for r in answers if r.status_code not in (201, 202)]
    assert len(started) == 2, [(r.status_code, r.text[:200]) for r in answers]
    assert {r.status_code for r in refused} == {429}, [r.text for r in refused]
    assert {r.json()["message"] for r in refused} == {
        "Pair notebook is full: all 2 places are in use. Try again when a server of it has stopped."}
    for user in started:
        hub.wait_for_ready(user)
    running = [u for u in users if hub.server_model(u)]
    assert sorted(running) == sorted(started)
    assert gauge(hub, "multiplespawner_running_servers", "pair") == 2
    # the refused spawns ran no pre_spawn_hook
    assert sorted(hub.hooked.read_text().split()) == sorted(started)
    # a stop gives the place back
    hub.stop_server(started[0])
    newcomer = next(u for u in users if u not in started)
    assert post(hub, newcomer, "pair").status_code in (201, 202)


def test_the_line_admits_in_order_outlasts_start_timeout_and_lets_a_waiter_cancel(quota_hub):
    hub = quota_hub
    first, *waiting = users = ["lfirst", "lb", "lc", "ld"]
    for user in users:
        hub.create_user(user)
    hub.spawn(first, user_options={"template": "line"})
    threads = {}
    queued_at = time.monotonic()
    for n, user in enumerate(waiting, start=1):
        threads[user] = in_background(hub, user, "line")
        wait_until(lambda: gauge(hub, "multiplespawner_queue_length", "line") == n, timeout=30,
                   message=f"{user} in line")
    for position, user in enumerate(waiting, start=1):
        ordinal = {1: "1st", 2: "2nd", 3: "3rd"}[position]
        wait_until(lambda: f"{user}: {ordinal} in line for Line notebook" in hub.log_text(), timeout=15,
                   message=f"{user}'s position reported")
    assert hub.server_model("lb")["pending"] == "spawn"

    # the 2nd in line cancels: gone from the line and from the hub, the 3rd moves up
    r = hub.api("DELETE", "/users/lc/server")
    assert r.status_code in (202, 204), r.text
    wait_until(lambda: hub.server_model("lc") is None, timeout=30, message="cancelled spawn gone")
    assert gauge(hub, "multiplespawner_queue_length", "line") == 2
    wait_until(lambda: "ld: 2nd in line for Line notebook" in hub.log_text(), timeout=15, message="ld moved up")

    # waiting longer than the hub's start_timeout does not fail a spawn: the wait is not timed
    time.sleep(max(0.0, LINE_START_TIMEOUT + 12 - (time.monotonic() - queued_at)))
    assert hub.server_model("lb")["pending"] == "spawn"
    # places free one at a time and go to the waiters in order of arrival
    hub.stop_server(first)
    hub.wait_for_ready("lb", timeout=60)
    assert hub.server_model("ld")["pending"] == "spawn"
    hub.stop_server("lb")
    hub.wait_for_ready("ld", timeout=60)
    assert gauge(hub, "multiplespawner_queue_length", "line") == 0
    for user in ("lb", "ld"):
        threads[user][0].join(timeout=30)
        assert threads[user][1]["r"].status_code in (201, 202)


def test_a_wait_gives_up_after_queue_timeout_with_a_message(quota_hub):
    hub = quota_hub
    for user in ("tholder", "twaiter"):
        hub.create_user(user)
    hub.spawn("tholder", user_options={"template": "brief"})
    begun = time.monotonic()
    r = post(hub, "twaiter", "brief")
    assert r.status_code == 429, r.text
    assert r.json()["message"] == ("Gave up waiting for a place of Brief notebook after 3 s "
                                   "(the template's queue_timeout). Try again later.")
    assert 3 <= time.monotonic() - begun < 10
    assert hub.server_model("twaiter") is None


def test_the_per_user_cap_holds_for_named_servers_and_concurrent_requests(quota_hub):
    hub = quota_hub
    hub.create_user("nina")
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda s: post(hub, "nina", "solo", s), ["", "a", "b", "c"]))
    codes = sorted(r.status_code for r in answers)
    assert codes[0] in (201, 202) and codes[1:] == [429, 429, 429], [(r.status_code, r.text) for r in answers]
    refused = [r for r in answers if r.status_code == 429]
    assert len(refused) == 3
    assert refused[0].json()["message"] == \
        "You already have 1 server of Solo notebook; at most 1 may run at once. Stop one first."


def test_after_a_restart_running_servers_keep_their_places_and_waiters_start_again(quota_hub):
    hub = quota_hub
    for user in ("rholder", "rwaiter", "rlate", "pa", "pb", "pc"):
        hub.create_user(user)
    hub.spawn("rholder", user_options={"template": "line"})
    hub.spawn("pa", user_options={"template": "pair"})
    hub.spawn("pb", user_options={"template": "pair"})
    thread, _ = in_background(hub, "rwaiter", "line")  # blocks (in line) until the restart
    wait_until(lambda: gauge(hub, "multiplespawner_queue_length", "line") == 1, timeout=30, message="waiting")

    hub.restart()
    thread.join(timeout=30)
    assert "error" in _ or _["r"].status_code in (202, 429)
    # the waiter's spawn did not survive: its user is told by the hub that nothing runs, and starts again
    wait_until(lambda: hub.server_model("rwaiter") is None, timeout=30, message="waiter's spawn dropped")
    # and the spawn page (where the pending page sends them) says why
    page = hub_session(hub, "rwaiter").get(f"{hub.url}/hub/spawn/rwaiter", timeout=30)
    assert page.status_code == 200, page.text[-2000:]
    assert "Your place in line for Line notebook (waiting since " in page.text, page.text[-3000:]
    assert "UTC) was lost when the hub restarted. Start again to join the line." in page.text
    # the running servers still hold their places, counted from the restored state
    assert hub.server_model("rholder")["ready"]
    assert gauge(hub, "multiplespawner_running_servers", "pair") == 2
    r = post(hub, "pc", "pair")
    assert r.status_code == 429, r.text
    # and the line works on: a new waiter gets the place when the holder stops
    thread, answer = in_background(hub, "rlate", "line")
    wait_until(lambda: gauge(hub, "multiplespawner_queue_length", "line") == 1, timeout=30, message="waiting again")
    hub.stop_server("rholder")
    hub.wait_for_ready("rlate", timeout=60)
    thread.join(timeout=30)
    assert answer["r"].status_code in (201, 202)
    assert "waiting" not in hub.server_model("rlate")["state"]  # the stored wait ended with it
    page = hub_session(hub, "rholder").get(f"{hub.url}/hub/spawn/rholder", timeout=30)
    assert page.status_code == 200 and 'id="multiplespawner-form"' in page.text, page.text[-2000:]
    assert "was lost when the hub restarted" not in page.text  # only the waiter is told


def test_places_come_back_from_servers_found_gone_and_from_failed_spawns(quota_hub):
    hub = quota_hub
    for user in ("gholder", "gwaiter", "fa", "fb"):
        hub.create_user(user)
    pid = hub.spawn("gholder", user_options={"template": "gone"})["state"]["child_state"]["pid"]
    thread, answer = in_background(hub, "gwaiter", "gone")
    wait_until(lambda: gauge(hub, "multiplespawner_queue_length", "gone") == 1, timeout=30, message="waiting")
    os.kill(pid, signal.SIGTERM)  # the holder's server dies; the hub's poll finds it gone
    hub.wait_for_ready("gwaiter", timeout=60)
    assert hub.server_model("gholder") is None
    thread.join(timeout=30)
    # a spawn that fails to start gives its place back: the next one fails the same way, not 429
    for user in ("fa", "fb"):
        r = post(hub, user, "broken")
        assert r.status_code == 500 and "The start step failed" in r.json()["message"], r.text
    assert gauge(hub, "multiplespawner_running_servers", "broken") == 0
