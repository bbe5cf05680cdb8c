"""ldap_hooks as the pre_spawn_hook of a real JupyterHub (with CHP), spawning through REST."""

from pathlib import Path

from tests.fixtures.slapd import MOCK_SPAWNER_CONFIG, ldap_hub_config, ldap_hub_env as hub_env


def hub_config(slapd) -> str:
    return ldap_hub_config() + MOCK_SPAWNER_CONFIG


def process_env(pid: int) -> dict:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_spawn_through_hub_sets_nb_uid_and_reports_ldap_outage(slapd, hub_factory):
    hub = hub_factory(hub_config(slapd), env=hub_env(slapd))
    hub.create_user("alice")
    hub.spawn("alice", timeout=60)

    state = hub.api("GET", "/users/alice", params={"include_stopped_servers": "1"}).json()
    pid = state["servers"][""]["state"]["pid"]
    env = process_env(pid)
    assert env["NB_USER"] == "alice" and env["NB_UID"] == "10000"
    [entry] = slapd.entries("(uid=alice)")
    assert entry["dn"] == "uid=alice,ou=people,dc=example,dc=org"

    # the second spawn of the same user reuses the entry
    hub.stop_server("alice")
    hub.spawn("alice", timeout=60)
    assert len(slapd.entries("(objectClass=posixAccount)")) == 1
    hub.stop_server("alice")

    # directory down: the spawn request fails with the hook's message, no server is left
    slapd.stop()
    hub.create_user("bob")
    r = hub.api("POST", "/users/bob/server", json={})
    assert r.status_code == 503, r.text
    assert "user directory (LDAP) is not reachable" in r.json()["message"]
    assert hub.server_model("bob") is None
    assert "LDAP: setting up the entry of user 'bob' failed (DirectoryUnavailable)" in hub.log_text()
