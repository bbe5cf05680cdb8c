"""The harness's hub really runs: API, a LocalProcessSpawner server as a Unix user, restart."""

import pwd


def test_hub_spawns_local_process_as_unix_user(hub_factory, unix_user):
    name = unix_user()
    hub = hub_factory()
    hub.create_user(name)
    model = hub.spawn(name)
    assert model["ready"]
    r = hub.server_request(name, "/api/status")
    assert r.status_code == 200, r.text

    # The server is the user's own process, not root's.
    uid = pwd.getpwnam(name).pw_uid
    procs = [p for p in _processes_of(uid) if "jupyterhub-singleuser" in p]
    assert procs, "no jupyterhub-singleuser process runs as the user"

    hub.stop_server(name)
    assert hub.server_model(name) is None


def test_hub_restart_keeps_running_server(hub_factory, unix_user):
    name = unix_user()
    hub = hub_factory()
    hub.create_user(name)
    hub.spawn(name)
    hub.restart()
    assert hub.server_model(name)["ready"]
    assert hub.server_request(name, "/api/status").status_code == 200


def _processes_of(uid):
    import os

    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                yield f.read().replace(b"\0", b" ").decode()
        except OSError:
            continue
