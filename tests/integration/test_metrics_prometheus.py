"""A real Prometheus scrapes a real hub's ``/hub/metrics`` while servers start, fail and stop,
and PromQL over Prometheus's HTTP API returns the series and values the suite promises
(docs/metrics.md). One hub (with ``ldap_hooks`` against a real slapd as its pre-spawn hook) and
one Prometheus for the module; servers run JupyterHub's mock single-user server as real Unix
users.

Prometheus logs in as a JupyterHub service whose only scope is ``read:metrics``
(``authenticate_prometheus`` stays on, as in production).
"""

import json
import secrets
import sys
import tempfile
from pathlib import Path

import pytest
import requests

from tests.fixtures.hub import Hub, create_unix_user, remove_unix_user
from tests.fixtures.prometheus import ScrapeTarget
from tests.fixtures.slapd import Slapd, ldap_hub_config, ldap_hub_env

MOCKSU = [sys.executable, "-m", "jupyterhub.tests.mocksu"]
DASHBOARD = Path(__file__).resolve().parents[2] / "examples/grafana/multiplespawner-dashboard.json"
METRICS_TOKEN = secrets.token_hex(32)
#: the Unix users (and hub users) of this module
USERS = [f"tm{secrets.token_hex(4)}" for _ in range(2)]


def hub_config(catalogue: Path) -> str:
    return f"""
c.JupyterHub.spawner_class = "multiple"
c.JupyterHub.allow_named_servers = True
c.MultipleSpawner.catalogue_paths = [{str(catalogue)!r}]
c.MultipleSpawner.catalogue_check_interval = 0
c.JupyterHub.authenticate_prometheus = True  # the default: /hub/metrics wants read:metrics
c.JupyterHub.services.append({{"name": "prometheus", "api_token": {METRICS_TOKEN!r}}})
c.JupyterHub.load_roles.append({{"name": "metrics-reader", "scopes": ["read:metrics"],
                                 "services": ["prometheus"]}})
"""


def catalogue() -> dict:
    def local(name, cmd):
        return {"name": name, "resource_type": "local", "providers": ["local"],
                "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner", "kwargs": {"cmd": cmd}}}

    return {"deployments": {"local": [{"name": "hub-host", "provider": "local"}]},
            "templates": [local("mock", MOCKSU), local("bad-command", ["/nonexistent/jupyterhub-singleuser"])]}


@pytest.fixture(scope="module")
def directory(request):
    """slapd for the hub's LDAP hook; the test stops and starts it."""
    server = Slapd()
    request.addfinalizer(server.cleanup)
    return server.start()


@pytest.fixture(scope="module")
def hub(directory):
    workdir = Path(tempfile.mkdtemp(prefix="metrics-"))
    workdir.chmod(0o755)
    path = workdir / "catalogue.json"
    path.write_text(json.dumps(catalogue()))
    for user in USERS:
        create_unix_user(user)
    hub = Hub(ldap_hub_config(connect_timeout=2.0) + hub_config(path), env=ldap_hub_env(directory))
    try:
        yield hub.start()
    except BaseException:
        print(hub.log_tail(200), file=sys.stderr)
        raise
    finally:
        hub.remove()
        for user in USERS:
            remove_unix_user(user)


@pytest.fixture(scope="module")
def prometheus(hub, prometheus_factory):
    target = ScrapeTarget("jupyterhub", f"127.0.0.1:{hub.hub_port}", "/hub/metrics", METRICS_TOKEN)
    return prometheus_factory([target], scrape_interval=1.0)


def test_metrics_need_a_token_with_the_read_metrics_scope(hub, prometheus):
    url = f"http://127.0.0.1:{hub.hub_port}/hub/metrics"
    assert requests.get(url, timeout=30).status_code == 403
    harness = requests.get(url, headers={"Authorization": f"token {hub.token}"}, timeout=30)
    assert harness.status_code == 403, "admin:users, admin:servers, ... but no read:metrics: no metrics"
    r = requests.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30)
    assert r.status_code == 200
    assert "multiplespawner_catalogue_reload_errors_total 0.0" in r.text
    assert 'cloudsshspawner_tunnel_reconnects_total{result="reconnected"} 0.0' in r.text  # there from the start
    prometheus.wait_for('up{job="jupyterhub"}', {(("instance", f"127.0.0.1:{hub.hub_port}"), ("job", "jupyterhub")): 1})


def test_prometheus_sees_spawns_failures_and_stops(hub, prometheus, directory):
    first, second = USERS
    for user in USERS:
        hub.create_user(user)
        hub.spawn(user, user_options={"template": "mock"})
    # both servers up, and Prometheus has seen them running
    prometheus.wait_for("jupyterhub_running_servers", {(("instance", f"127.0.0.1:{hub.hub_port}"),
                                                        ("job", "jupyterhub")): 2})
    r = hub.api("POST", f"/users/{first}/servers/broken", json={"template": "bad-command"})
    assert r.status_code in (201, 202, 500), r.text
    if r.status_code != 500:  # the hub answered before start failed: wait for it to give up
        with pytest.raises(Exception, match="failed to start"):
            hub.wait_for_ready(first, "broken", timeout=60)
    r = hub.api("POST", f"/users/{second}/servers/other", json={"template": first})  # names no template
    assert r.status_code == 400, r.text
    directory.stop()  # the directory is down: the LDAP hook stops the next spawn (503)
    try:
        hub.create_user("ldap-down")
        r = hub.api("POST", "/users/ldap-down/server", json={"template": "mock"})
        assert r.status_code == 503, r.text
    finally:
        directory.start()
    for user in USERS:
        hub.stop_server(user)

    prometheus.wait_for('sum by (template) (multiplespawner_spawn_phase_duration_seconds_count{phase="start"})',
                        {(("template", "mock"),): 2})
    prometheus.wait_for("sum by (template, reason) (multiplespawner_spawn_failures_total)",
                        {(("reason", "start_failed"), ("template", "bad-command")): 1,
                         (("reason", "invalid_user_options"), ("template", "(none)")): 1,
                         (("reason", "ldap_unavailable"), ("template", "mock")): 1})
    # the LDAP hook: two entries created, one found (the failed start's), one failure
    prometheus.wait_for("sum by (outcome) (ldap_hooks_entry_setup_duration_seconds_count)",
                        {(("outcome", "created"),): 2, (("outcome", "found"),): 1, (("outcome", "failed"),): 1})
    prometheus.wait_for("sum by (reason) (ldap_hooks_entry_setup_failures_total) > 0",
                        {(("reason", "ldap_unavailable"),): 1})
    # counted from the hub's spawners: none after the failures and the stops (JupyterHub's own
    # jupyterhub_running_servers subtracts one for each failed start too; docs/metrics.md)
    prometheus.wait_for('sum(multiplespawner_running_servers{job="jupyterhub"})', {(): 0})
    assert prometheus.query('max_over_time(multiplespawner_running_servers{job="jupyterhub", template="mock"}[10m])') == {
        (("instance", f"127.0.0.1:{hub.hub_port}"), ("job", "jupyterhub"), ("template", "mock")): 2}

    # no user name in any label of any series the hub exported
    values = {v for series in prometheus.series('{job="jupyterhub"}') for v in series.values()}
    assert values and not [v for v in values if any(user in v for user in [*USERS, "ldap-down"])]


def test_every_dashboard_query_is_promql_prometheus_accepts(hub, prometheus):
    """The shipped Grafana dashboard's queries, with its ``$job`` variable set, parse and run;
    the spawn panels have data from the spawns above."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    results = {}
    for panel in panels:
        for target in panel.get("targets", []):
            results[(panel["title"], target["refId"])] = prometheus.query(target["expr"].replace("$job", "jupyterhub"))
    assert results[("Servers starting or running", "A")] == {(): 0}
    assert results[("Users", "A")] == {(): len(USERS) + 1}  # and ldap-down
    assert (("template", "mock"),) in results[("Successful spawns per template (per 5 min)", "A")]
    assert (("reason", "start_failed"),) in results[("Spawn failures by reason (per 5 min)", "A")]
