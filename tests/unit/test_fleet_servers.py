"""The fleet service's rules without a hub: server rows from hub models, filters, permissions."""

import time
from datetime import datetime, timezone

import pytest

from multiplespawner.drain import is_drained, read_drained, set_drained
from multiplespawner.extensions import extended_deadline, read_extensions, set_extension
from multiplespawner.fleet.access import manager_from_scopes
from multiplespawner.fleet.servers import FilterError, parse_duration, parse_filter, plan_extension, server_rows
from multiplespawner.notices import add_notice, notices_html, read_notices

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=timezone.utc)
TEMPLATES = {"lab": {"resource_type": "local", "tags": ["course-a"]},
             "gpu": {"resource_type": "bare_metal", "tags": ["course-b"]}}


def server(template, provider, started, activity, pending=None, ready=True, machine=None, deadline=None,
           queued=None):
    state = {"multiple": {"template": template, "catalogue_version": "v1", "options": {"provider": provider},
                          "deadline": deadline, **({"queued": queued} if queued else {})},
             "child_state": {"pid": 4242}}
    if machine:
        state["machine"] = machine
    return {"pending": pending, "ready": ready, "started": started, "last_activity": activity, "state": state}


POOL_LEASE = {"kind": "pool", "deployment": "lab-pool", "credentials": {"private": "secret"},
              "machine": {"id": "node7", "provider": "pool", "host": "10.1.0.7", "port": 22,
                          "ssh_user": "", "host_public_key": "ssh-ed25519 AAAA"}}
USERS = [
    {"name": "bo", "groups": ["course-b"], "servers": {
        "": server("gpu", "pool", "2026-05-04T09:00:00Z", "2026-05-04T11:59:00Z", machine=POOL_LEASE,
                   deadline=NOW.timestamp() + 600)}},
    {"name": "al", "groups": ["course-a"], "servers": {
        "": server("lab", "local", "2026-05-04T11:30:00.123456Z", "2026-05-04T11:00:00Z"),
        "x": server("lab", "local", "2026-05-04T11:58:00Z", None, pending="spawn", ready=False),
        "y": server("gone", "local", "2026-05-03T11:00:00Z", "2026-05-03T11:00:00Z", pending="stop")}},
    {"name": "cy", "groups": [], "servers": {
        "": server("lab", "local", "2026-05-04T11:59:00Z", None, pending="spawn", ready=False,
                   queued="2nd in line for Lab, about 5 min")}},
]


def rows(**query):
    wanted = parse_filter(query)
    return [r["server"] for r in server_rows(USERS, TEMPLATES, NOW) if wanted.matches(r, NOW)]


def test_rows_carry_what_operators_need_and_no_secrets():
    table = {r["server"]: r for r in server_rows(USERS, TEMPLATES, NOW)}
    assert list(table) == ["al/", "al/x", "al/y", "bo/", "cy/"]
    assert (table["cy/"]["state"], table["cy/"]["queue_position"]) == ("queued", "2nd in line for Lab, about 5 min")
    assert table["al/x"]["queue_position"] is None
    bo = table["bo/"]
    assert bo["machine"] == {"kind": "pool", "deployment": "lab-pool", "provider": "pool", "id": "node7",
                             "host": "10.1.0.7", "port": 22}
    assert (bo["resource_type"], bo["tags"], bo["lifetime_left_seconds"], bo["state"]) == (
        "bare_metal", ["course-b"], 600, "running")
    assert table["al/x"]["state"] == "pending" and table["al/y"]["state"] == "stopping"
    assert table["al/y"]["tags"] == [] and table["al/y"]["resource_type"] is None  # template since removed
    assert "secret" not in repr(table) and "pid" not in repr(table) and "AAAA" not in repr(table)


@pytest.mark.parametrize("query, expected", [
    ({}, ["al/", "al/x", "al/y", "bo/", "cy/"]),
    ({"template": "lab"}, ["al/", "al/x", "cy/"]),
    ({"template": ["lab", "gpu"], "state": "running"}, ["al/", "bo/"]),
    ({"provider": "pool"}, ["bo/"]),
    ({"group": "course-a"}, ["al/", "al/x", "al/y"]),
    ({"state": ["pending", "stopping"]}, ["al/x", "al/y"]),
    ({"state": "queued"}, ["cy/"]),
    ({"older_than": "1h"}, ["al/y", "bo/"]),
    ({"older_than": ["1h", "10m"]}, ["al/", "al/y", "bo/"]),  # the smallest counts
    ({"idle_for": "30"}, ["al/", "al/y"]),  # minutes; a server never active is not idle
    ({"host": "node7"}, ["bo/"]),
    ({"host": "10.1.0.7"}, ["bo/"]),
    ({"host": "node8"}, []),
    ({"server": "al"}, ["al/", "al/x", "al/y"]),
    ({"server": ["al/", "bo/x"]}, ["al/"]),
])
def test_filters(query, expected):
    assert rows(**query) == expected


@pytest.mark.parametrize("query, words", [
    ({"colour": "red"}, "unknown filter"),
    ({"state": "asleep"}, "not one of"),
    ({"older_than": "soon"}, "not a duration"),
    ({"older_than": "1e400"}, "not a duration"),
    ({"idle_for": "-5m"}, "not a duration"),
    ({"template": [None]}, "non-empty string"),
    ({"template": ""}, "non-empty string"),
    ({"template": ["x"] * 51}, "at most 50"),
    ({"host": "h" * 201}, "at most 200"),
])
def test_bad_filters_say_what_is_wrong(query, words):
    with pytest.raises(FilterError, match=words):
        parse_filter(query)


def test_parse_filter_needs_an_object():
    with pytest.raises(FilterError, match="object"):
        parse_filter(["template"])


def test_durations():
    assert [parse_duration(t) for t in ("90s", "30m", "2h", "1.5d", "45")] == [90, 1800, 7200, 129600, 2700]


def test_who_manages_what():
    row_a, row_b, orphan = ({"tags": ["course-a"]}, {"tags": ["course-b"]}, {"tags": []})
    admin = manager_from_scopes("boss", ["admin:servers", "read:users"])
    operator = manager_from_scopes("ops", ["custom:servers:manage"])
    ta = manager_from_scopes("ta", ["custom:servers:manage!group=course-a", "admin:servers!group=course-b"])
    assert all(m.may_manage(r) for m in (admin, operator) for r in (row_a, row_b, orphan))
    assert ta.may_manage(row_a) and not ta.may_manage(row_b) and not ta.may_manage(orphan)
    assert ta.refusal("lab", ["course-a"]) is None and "course-a" in ta.refusal("gpu", ["course-b"])
    assert manager_from_scopes("x", ["custom:templates:edit!group=course-a", "read:servers"]) is None
    assert manager_from_scopes("x", None) is None


def test_drain_file_round_trip_and_refusals(tmp_path):
    path = tmp_path / "drained.json"
    assert read_drained(path) == {}  # no file: nothing drained
    set_drained(path, "10.1.0.7", "boss", True)
    drained = set_drained(path, "10.1.0.8:2222", "boss", True)
    assert set(drained) == {"10.1.0.7", "10.1.0.8:2222"} and drained["10.1.0.7"]["by"] == "boss"
    assert path.stat().st_mode & 0o077 == 0
    assert is_drained(drained, "10.1.0.7:22", "10.1.0.7")  # by address: every port
    assert is_drained(drained, "10.1.0.8:2222", "10.1.0.8") and not is_drained(drained, "10.1.0.8:22", "10.1.0.8")
    assert set(set_drained(path, "10.1.0.7", "boss", False)) == {"10.1.0.8:2222"}
    for text in ("{", "[]", '{"drained": []}'):
        path.write_text(text)
        with pytest.raises(ValueError, match="drain file"):
            read_drained(path)  # a broken file is an error, never "nothing drained"


def test_an_extension_moves_its_sessions_deadline_within_the_templates_maximum(tmp_path):
    path = tmp_path / "extended.json"
    own = NOW.timestamp() + 600
    user = {"name": "ed", "groups": [], "servers": {"": server("lab", "local", "2026-05-04T11:00:00Z", None)}}
    record = user["servers"][""]["state"]["multiple"]
    record.update(deadline=own, lifetime_minutes=60)  # started 50 min ago, 60-min session
    templates = {"lab": {"resource_type": "local", "tags": [], "max_lifetime_minutes": 120}}
    (row,) = server_rows([user], templates, NOW, read_extensions(path))
    assert row["latest_deadline"] == "2026-05-04T13:10:00Z" and row["lifetime_left_seconds"] == 600
    assert plan_extension(row, 61)[0] is None and "at most 60 more minutes" in plan_extension(row, 61)[1]
    new, _ = plan_extension(row, 60)
    set_extension(path, "ed/", own, new, "boss")
    set_extension(path, "old/", 1.0, 2.0, "boss")  # long past: dropped at the next write
    set_extension(path, "ed/", own, new, "boss")
    assert set(read_extensions(path)) == {"ed/"} and path.stat().st_mode & 0o077 == 0
    (row,) = server_rows([user], templates, NOW, read_extensions(path))
    assert row["lifetime_left_seconds"] == 600 + 3600 and plan_extension(row, 1)[0] is None
    assert extended_deadline(read_extensions(path), "ed/", own + 1) is None  # another session: not extended
    assert "not running" in plan_extension({**row, "state": "pending"}, 1)[1]
    assert "no session lifetime" in plan_extension({**row, "deadline": None}, 1)[1]


def test_a_stopped_server_is_listed_only_if_its_last_start_failed():
    failed = {"pending": None, "ready": False, "started": None, "last_activity": None, "stopped": True,
              "state": {"last_failure": {"time": "2026-05-04T11:00:00Z", "message": "The start step failed: boom",
                                         "template": "lab", "provider": "local"}}}  # the hub cleared the rest
    stopped = {**server("lab", "local", None, None, ready=False), "stopped": True}
    users = [{"name": "fy", "groups": [], "servers": {"a": failed, "b": stopped}}]
    (row,) = server_rows(users, TEMPLATES, NOW)
    assert (row["server"], row["state"], row["template"], row["provider"], row["tags"], row["failure"]["message"]) == (
        "fy/a", "failed", "lab", "local", ["course-a"], "The start step failed: boom")
    assert parse_filter({"state": "failed"}).matches(row, NOW)


def test_notices_reach_only_their_users_escaped_and_until_they_expire(tmp_path):
    path, now = tmp_path / "notices.json", time.time()
    add_notice(path, "Closes at <b>17:00</b>", ["al/", "al/x", "bo/"], "ta", now + 60)
    add_notice(path, "old", ["al/"], "ta", now - 1)
    add_notice(path, "new", ["cy/"], "ta", now + 60)  # the expired one is dropped here
    notices = read_notices(path)
    assert notices_html(notices, "al", now) == "Closes at &lt;b&gt;17:00&lt;/b&gt;"
    assert notices_html(notices, "dy", now) == "" and notices_html(notices, "bo", now + 61) == ""
    assert sorted(n["message"] for n in notices.values()) == ["Closes at <b>17:00</b>", "new"]
    assert path.stat().st_mode & 0o077 == 0
