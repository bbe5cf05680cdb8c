"""The Prometheus metrics without services: each instrumentation point moves its metric (and
only for the labels it should), and no user name ever becomes a label value.

The metrics live in prometheus_client's global registry, so each test compares values before
and after what it does."""

import asyncio
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from jupyterhub import orm
from jupyterhub.spawner import Spawner, SpawnException
from prometheus_client import REGISTRY
from traitlets import Unicode
from traitlets.config import Config

from cloudsshspawner.tunnel import HostKeyError, SSHTarget, SSHTunnel
from ldap_hooks import setup_ldap_entry_hook
from ldap_hooks.hooks import EntryResult
from ldap_hooks.metrics import measured
from multiplespawner.catalogue import CatalogueSource, DEFAULT_SPAWNER_CLASSES
from multiplespawner.errors import failed, refused
from multiplespawner.machines import MachineLease, MachineOrchestrator
from multiplespawner.machines.lifecycle import lease_from_record
from multiplespawner.metrics import FAILURE_REASONS, NO_TEMPLATE, PhaseClock, failure_reason
from multiplespawner.spawner import MultipleSpawner

HERE = "tests.unit.test_metrics."
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfThePoolHost"
#: user names a test spawns as; none may show up as a label value
USERS = ("mallory", "ann.o'brien", "template-x")


class InstantSpawner(Spawner):
    """A child whose start returns at once (or raises ``fail_with``): no process is started."""

    fail_with = Unicode("", help="Message of the RuntimeError start raises; empty: start succeeds.").tag(config=True)

    async def start(self):
        if self.fail_with:
            raise RuntimeError(self.fail_with)
        return "http://127.0.0.1:9"

    async def poll(self):
        return None

    async def stop(self, now=False):
        pass


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def write_catalogue(path):
    path.write_text(json.dumps({
        "deployments": {"local": [{"name": "hub", "provider": "local"}]},
        "templates": [
            {"name": "quick", "resource_type": "local", "providers": ["local"],
             "spawner": {"class": HERE + "InstantSpawner"}},
            {"name": "broken", "resource_type": "local", "providers": ["local"],
             "spawner": {"class": HERE + "InstantSpawner", "kwargs": {"fail_with": "no such program"}}},
            {"name": "misfit", "resource_type": "local", "providers": ["local"],
             "spawner": {"class": HERE + "InstantSpawner", "kwargs": {"start_timeout": "soon"}}},
        ],
    }))
    return path


def multiple_spawner(tmp_path, user="ann") -> MultipleSpawner:
    user = SimpleNamespace(name=user, admin=False, groups=[])
    paths = [str(write_catalogue(tmp_path / "catalogue.json"))]
    return MultipleSpawner(user=user, catalogue_paths=paths, catalogue_check_interval=0,
                           allowed_spawner_classes=[*DEFAULT_SPAWNER_CLASSES, HERE + "InstantSpawner"])


async def spawn(spawner, options):
    """What the hub does for a spawn: the pre-spawn hook, then start; the error, if any."""
    spawner.user_options = options
    try:
        await spawner.run_pre_spawn_hook()
        await spawner.start()
    except (SpawnException, asyncio.CancelledError) as e:
        return e
    return None


# ---- spawn failures and the start phase --------------------------------------------------------
@pytest.mark.parametrize("error, reason", [
    (refused("bad cpu"), "invalid_user_options"),
    (failed("no catalogue", "catalogue_error"), "catalogue_error"),
    (SpawnException("full", reason="quota", status_code=429), "quota"),
    (SpawnException("odd", reason="something_new", status_code=500), "other"),
    (SpawnException("user text", reason="mallory's choice", status_code=500), "other"),
    (TimeoutError("slow"), "timeout"),
    (asyncio.CancelledError(), "cancelled"),
    (RuntimeError("bug"), "error"),
])
def test_failure_reasons_are_a_fixed_set(error, reason):
    assert failure_reason(error) == reason
    assert reason in FAILURE_REASONS


async def test_spawns_count_failures_by_template_and_reason_and_time_the_start(tmp_path):
    spawner = multiple_spawner(tmp_path)
    failures = "multiplespawner_spawn_failures_total"
    phase = "multiplespawner_spawn_phase_duration_seconds_count"
    before = {
        "refused": value(failures, template=NO_TEMPLATE, reason="invalid_user_options"),
        "misfit": value(failures, template="misfit", reason="template_error"),
        "broken": value(failures, template="broken", reason="start_failed"),
        "quick": value(phase, template="quick", provider="local", phase="start"),
        "broken-start": value(phase, template="broken", provider="local", phase="start"),
    }
    error = await spawn(spawner, {"template": "nope"})
    assert (error.status_code, error.reason) == (400, "invalid_user_options")
    error = await spawn(spawner, {"template": "misfit"})
    assert (error.status_code, error.reason) == (500, "template_error")
    error = await spawn(spawner, {"template": "broken"})
    assert (error.reason, error.message) == ("start_failed", "The start step failed: InstantSpawner: no such program")
    spawner.clear_state()  # as the hub's stop after a failure does
    assert await spawn(spawner, {"template": "quick"}) is None
    assert value(failures, template=NO_TEMPLATE, reason="invalid_user_options") == before["refused"] + 1
    assert value(failures, template="misfit", reason="template_error") == before["misfit"] + 1
    assert value(failures, template="broken", reason="start_failed") == before["broken"] + 1
    assert value(phase, template="quick", provider="local", phase="start") == before["quick"] + 1
    assert value(phase, template="broken", provider="local", phase="start") == before["broken-start"]  # failed: not timed


async def test_a_cancelled_start_is_counted_as_cancelled(tmp_path):
    spawner = multiple_spawner(tmp_path)
    before = value("multiplespawner_spawn_failures_total", template="quick", reason="cancelled")
    spawner.user_options = {"template": "quick"}
    await spawner.run_pre_spawn_hook()
    spawner.child.start = lambda: asyncio.sleep(60)
    task = asyncio.ensure_future(spawner.start())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert value("multiplespawner_spawn_failures_total", template="quick", reason="cancelled") == before + 1


# ---- machine phases and pool occupancy ---------------------------------------------------------
def test_the_phase_clock_times_each_phase_once_it_is_over():
    name = "multiplespawner_spawn_phase_duration_seconds_count"
    labels = dict(template="clocked", provider="libvirt")
    clock = PhaseClock(phase="create", **labels)
    for phase in ("wait", "configure"):
        clock.enter(phase)
    assert clock.phase == "configure"
    assert [value(name, phase=p, **labels) for p in ("create", "wait", "configure")] == [1, 1, 0]
    clock.done()
    assert value(name, phase="configure", **labels) == 1


async def test_a_pool_lease_times_its_phases_and_publishes_occupancy():
    """A plain pool host (no configurer): the create phase is timed, configure is not; the
    host's occupancy gauge follows claim and release, next to its capacity."""
    deployment = {"name": "lab-pcs", "provider": "pool",
                  "hosts": [{"address": "127.0.0.2", "port": 2222, "host_key": HOST_KEY, "capacity": 2}]}
    spec = {"name": "pc", "resource_type": "bare_metal", "providers": ["pool"],
            "spawner": {"class": "cloudsshspawner.CloudSSHSpawner"}}
    spawner = SimpleNamespace(user=SimpleNamespace(name="mallory"), name="", _log_name="mallory",
                              log=SimpleNamespace(info=print, error=print))
    host = dict(deployment="lab-pcs", host="127.0.0.2:2222")
    phase = "multiplespawner_spawn_phase_duration_seconds_count"
    before = {p: value(phase, template="pc", provider="pool", phase=p) for p in ("create", "configure")}
    lease = MachineLease(spawner, MachineOrchestrator(), spec, deployment, {})
    traits = await lease.acquire(lambda progress, message: None)
    assert traits["remote_hosts"] == ["[127.0.0.2]:2222"]
    assert value("multiplespawner_pool_host_servers", **host) == 1
    assert value("multiplespawner_pool_host_capacity", **host) == 2
    assert value(phase, template="pc", provider="pool", phase="create") == before["create"] + 1
    assert value(phase, template="pc", provider="pool", phase="configure") == before["configure"]
    await lease.release()
    assert value("multiplespawner_pool_host_servers", **host) == 0


async def test_after_a_hub_restart_the_occupancy_comes_from_the_database():
    """The gauges start empty in a new hub process: restoring a running pool server's lease
    publishes its pool's occupancy from the servers' states in the hub database."""
    db = orm.new_session_factory("sqlite://")()
    deployment = {"name": "restart-pcs", "provider": "pool",
                  "hosts": [{"address": "127.0.0.3", "host_key": HOST_KEY, "capacity": 3},
                            {"address": "127.0.0.4", "host_key": HOST_KEY}]}
    spec = {"name": "pc", "resource_type": "bare_metal", "providers": ["pool"],
            "spawner": {"class": "cloudsshspawner.CloudSSHSpawner"}}
    states = {}
    for name in ("ann", "bob"):
        user = orm.User(name=name)
        db.add(user)
        lease = {"kind": "pool", "deployment": "restart-pcs", "machine": {"id": "127.0.0.3:22"}}
        states[name] = {"machine": lease}
        db.add(orm.Spawner(user=user, name="", state=states[name]))
    db.commit()
    spawner = SimpleNamespace(user=SimpleNamespace(name="ann"), name="", _deprecated_db_session=db)
    record = {"template_spec": spec, "deployment": deployment, "resources": {}}
    lease_from_record(spawner, MachineOrchestrator(), record, states["ann"]["machine"])
    assert value("multiplespawner_pool_host_servers", deployment="restart-pcs", host="127.0.0.3:22") == 2
    assert value("multiplespawner_pool_host_servers", deployment="restart-pcs", host="127.0.0.4:22") == 0
    assert value("multiplespawner_pool_host_capacity", deployment="restart-pcs", host="127.0.0.3:22") == 3


# ---- catalogue, tunnel, LDAP hook --------------------------------------------------------------
async def test_each_broken_catalogue_edit_counts_one_reload_error(tmp_path):
    path = tmp_path / "catalogue.yaml"
    path.write_text("deployments: {local: [{name: hub, provider: local}]}\n"
                    "templates: [{name: here, resource_type: local, providers: [local],"
                    " spawner: {class: jupyterhub.spawner.LocalProcessSpawner}}]\n")
    source = CatalogueSource([path], SimpleNamespace(info=print, error=print), check_interval=0)
    await source.get()
    before = value("multiplespawner_catalogue_reload_errors_total")
    path.write_text("templates: [")
    for _ in range(3):  # checked three times, changed once
        assert "here" in (await source.get()).templates  # the last good catalogue stays
    assert value("multiplespawner_catalogue_reload_errors_total") == before + 1
    path.write_text("templates: {}")
    await source.get()
    assert value("multiplespawner_catalogue_reload_errors_total") == before + 2


async def test_tunnel_reconnects_are_counted_by_result():
    tunnel = SSHTunnel(SSHTarget(host="127.0.0.1", port=1, username="x", key_path="", host_key=HOST_KEY),
                       reconnect_initial_delay=0.01)
    outcomes = [OSError("refused"), object(), HostKeyError("host key changed")]

    async def open_connection():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    tunnel._open_connection = open_connection
    name = "cloudsshspawner_tunnel_reconnects_total"
    before = {r: value(name, result=r) for r in ("reconnected", "host_key_changed")}
    assert await tunnel._reconnect() is True  # one refused try, then back
    assert await tunnel._reconnect() is False  # the machine shows another host key: given up
    assert value(name, result="reconnected") == before["reconnected"] + 1
    assert value(name, result="host_key_changed") == before["host_key_changed"] + 1


async def test_the_ldap_hook_records_its_latency_by_outcome_and_failures_by_reason():
    duration = "ldap_hooks_entry_setup_duration_seconds_count"
    before = {o: value(duration, outcome=o) for o in ("found", "created", "failed")}
    before_error = value("ldap_hooks_entry_setup_failures_total", reason="ldap_error")
    spawner = SimpleNamespace(config=Config(), user=SimpleNamespace(name="mallory"), log=SimpleNamespace(error=print))
    with pytest.raises(SpawnException) as e:  # no LDAP.url: the hub's setup is broken
        await setup_ldap_entry_hook(spawner)
    assert e.value.reason == "ldap_error"
    assert value("ldap_hooks_entry_setup_failures_total", reason="ldap_error") == before_error + 1
    assert value(duration, outcome="failed") == before["failed"] + 1
    for created in (True, False):
        await measured(lambda spawner: _result(created))(spawner)
    assert value(duration, outcome="created") == before["created"] + 1
    assert value(duration, outcome="found") == before["found"] + 1


async def _result(created: bool) -> EntryResult:
    return EntryResult(dn="uid=x,dc=example", attributes={}, created=created, values={})


# ---- cardinality ---------------------------------------------------------------------------------
async def test_user_names_and_user_text_never_become_label_values(tmp_path):
    """Spawns by users whose names look like templates, choices naming no template (user text),
    pool claims and LDAP failures by those users: every label value of the suite's metrics is a
    catalogue name or from a fixed set, and no user name appears in any metric at all."""
    for name in USERS:
        spawner = multiple_spawner(tmp_path, user=name)
        await spawn(spawner, {"template": name})  # a template name the catalogue does not have
        await spawn(spawner, {"template": "broken", "cpu": name})
        await spawn(MultipleSpawner(user=spawner.user, catalogue_paths=["/nonexistent.json"]), {})
        hook_spawner = SimpleNamespace(config=Config(), user=spawner.user, log=SimpleNamespace(error=print))
        with pytest.raises(SpawnException):
            await setup_ldap_entry_hook(hook_spawner)
    await test_a_pool_lease_times_its_phases_and_publishes_occupancy()

    catalogue_names = {"quick", "broken", "misfit", "pc", "clocked", "local", "pool", "libvirt", "lab-pcs",
                       "127.0.0.2:2222", "restart-pcs", "127.0.0.3:22", "127.0.0.4:22", NO_TEMPLATE}  # this module's
    fixed = {*FAILURE_REASONS, "create", "wait", "configure", "start", "found", "created", "failed",
             "reconnected", "host_key_changed", "other", "hub_start", "spawn"}
    ours = ("multiplespawner_", "cloudsshspawner_", "ldap_hooks_")
    seen = set()
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            for label, label_value in sample.labels.items():
                assert not any(user in label_value for user in USERS), (sample.name, label, label_value)
                if sample.name.startswith(ours) and label != "le":
                    seen.add(label_value)
    assert seen - catalogue_names - fixed == set()
    assert {NO_TEMPLATE, "invalid_user_options", "catalogue_error", "ldap_error"} <= seen


# ---- the dashboard and the docs ----------------------------------------------------------------
DASHBOARD = Path(__file__).resolve().parents[2] / "examples/grafana/multiplespawner-dashboard.json"
DOCS = Path(__file__).resolve().parents[2] / "docs/metrics.md"
SUITE_PREFIXES = ("multiplespawner_", "cloudsshspawner_", "ldap_hooks_")


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_the_dashboard_and_the_docs_cover_every_metric_of_the_suite():
    """Every metric the suite's modules define is on the dashboard and documented; every suite
    metric the dashboard names is documented (also those of modules not loaded here)."""
    exposed = {m.name + "_total" if m.type == "counter" else m.name
               for m in REGISTRY.collect() if m.name.startswith(SUITE_PREFIXES)}
    assert {"multiplespawner_spawn_phase_duration_seconds", "cloudsshspawner_tunnel_reconnects_total",
            "ldap_hooks_entry_setup_failures_total"} <= exposed
    queries = "\n".join(dashboard_queries())
    docs = DOCS.read_text()
    for name in exposed:
        assert name in queries, f"{name} is not on the dashboard"
        assert f"### `{name}`" in docs or f"`{name}` (" in docs, f"{name} is not documented"
    named = set(re.findall(r"\b(?:%s)[a-z_]+" % "|".join(SUITE_PREFIXES), queries))
    for name in named:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert f"`{base}`" in docs, f"the dashboard uses {name}, which docs/metrics.md does not describe"
