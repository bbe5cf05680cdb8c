"""Fault cells for SLURM's controller under the batch template (docs/reliability.md).

One real one-node cluster (:mod:`tests.fixtures.slurm`) and one hub whose MultipleSpawner has a
batch template (batchspawner's SlurmSpawner; the job runs JupyterHub's mock single-user server
through ``batchspawner-singleuser``, one CPU each, so the node fits two jobs). One server
(``running``) is started in a job before any fault and kept throughout; the cluster's
``slurmctld`` is restarted, frozen (SIGSTOP) and stopped by the PID the fixture started. After
each fault the very next spawn must succeed: a submission that timed out against the frozen
controller is queued by it when it resumes, and unless the batch adapter cancels that job it
holds the node's second CPU and the next job stays pending (reason ``Resources``).
"""

import json
import secrets
import sys
import time

import pytest
import requests

from tests.fixtures.faults import hung, refusing, restart
from tests.fixtures.hub import Hub, create_unix_user, remove_unix_user
from tests.fixtures.procs import wait_until
from tests.fixtures.slurm import running_cluster
from tests.integration.child_spawners import HUB_ENV
from tests.integration.test_cloudssh_spawner import user_processes
from tests.integration.test_faults import hub_latency_during, kept_server
from tests.integration.test_multiple_batch import BATCH_HUB_CONFIG, VENV_BIN
from tests.integration.test_multiple_hub import hub_config

#: the template's start_timeout (seconds): what bounds a spawn SLURM does not start
START_TIMEOUT = 45
#: sbatch's own bound on a frozen or stopped controller is about 10 s (MessageTimeout, retries)
FAILED_WITHIN = 30
OPTIONS = {"template": "slurm-job"}
USERS = ("running", "after-restart", "during-hang", "during-stop")


@pytest.fixture(scope="module")
def cluster():
    with running_cluster() as slurm:
        yield slurm


@pytest.fixture(scope="module")
def users():
    """Unix accounts (``fs<hex>-<role>``) for the roles in :data:`USERS`, removed after the module
    (after the hub and the cluster: nothing runs as them any more)."""
    prefix = f"fs{secrets.token_hex(2)}"
    made = {role: f"{prefix}-{role}"[:32] for role in USERS}
    try:
        for name in made.values():
            create_unix_user(name)
        yield made
    finally:
        for name in made.values():
            remove_unix_user(name)


@pytest.fixture(scope="module")
def slurm_hub(users, cluster, tmp_path_factory):
    # the job runs the mock server through batchspawner-singleuser, which runs a script by path:
    # put one where the job's user can read it (the cluster's directory is 0755)
    mocksu = cluster.dir / "mocksu"
    mocksu.write_text(f"#!{VENV_BIN}/python\nfrom jupyterhub.tests.mocksu import main\n\nmain()\n")
    mocksu.chmod(0o755)
    folder = tmp_path_factory.mktemp("slurm-faults")
    catalogue = folder / "catalogue.json"
    catalogue.write_text(json.dumps({
        "deployments": {"batch": [{"name": "test-cluster", "provider": "slurm"}]},
        "templates": [{
            "name": "slurm-job", "resource_type": "batch", "providers": ["slurm"],
            "resources": {"cpu": {"default": 1, "min": 1, "max": 1},
                          "memory_mb": {"default": 128, "min": 128, "max": 128}},
            "environment": dict(cluster.env),
            "spawner": {"class": "batchspawner.SlurmSpawner", "kwargs": {
                "cmd": [str(mocksu)],
                "batchspawner_singleuser_cmd": f"{VENV_BIN}/batchspawner-singleuser",
                "req_partition": cluster.partition,
                "startup_poll_interval": 0.2,
                "start_timeout": START_TIMEOUT,
            }},
        }],
    }))
    # slow_spawn_timeout 0: a spawn request answers 202 at once, also for a spawn that fails fast
    config = hub_config(catalogue, BATCH_HUB_CONFIG + 'c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}\n')
    hub = Hub(config, env={**HUB_ENV, **cluster.env}).start()
    with kept_server(hub, lambda: spawn(hub, users["running"])):
        yield hub


def spawn(hub, user) -> str:
    """Start ``user``'s server in a job; return the job's id."""
    hub.create_user(user)
    return hub.spawn(user, user_options=OPTIONS, timeout=START_TIMEOUT + 30)["state"]["child_state"]["job_id"]


def spawn_fails(hub, user) -> tuple[str, float]:
    """Ask for a server SLURM cannot take; return the message the spawn failed with and the
    seconds until the hub had given up on it (its server gone)."""
    hub.create_user(user)
    started = time.monotonic()
    r = hub.api("POST", f"/users/{user}/server", json=OPTIONS)
    assert r.status_code == 202, r.text
    try:
        events = hub.progress(user, timeout=START_TIMEOUT + 30)
    except requests.HTTPError as e:  # ended before the stream opened: the hub's log has the line
        assert e.response.status_code == 400, e
        # JupyterHub's line for the failed start ("Not starting NAME's server ...: why", or
        # "Error starting"/"Unhandled error starting")
        events = [{"failed": True, "message": line} for line in hub.log_text().splitlines()
                  if f"{user}'s server" in line and ("Not starting" in line or "rror starting" in line)][-1:]
    wait_until(lambda: hub.server_model(user) is None, timeout=60, message="the failed server gone")
    assert events and events[-1].get("failed"), events
    return events[-1]["message"], time.monotonic() - started


def running_answers(hub, users) -> bool:
    return hub.server_request(users["running"], "api/status", timeout=10).status_code == 200


def queue(cluster) -> dict[str, str]:
    """job id -> state of every job SLURM has not finished."""
    return {job.id: job.state for job in cluster.jobs()}


def cluster_report(cluster) -> str:
    """Why jobs pend: squeue's reasons, the node as the controller sees it, the daemons' logs."""
    return "\n".join([
        cluster.run("squeue", "-o", "%i %j %u %T %r", check=False).stdout,
        cluster.run("scontrol", "show", "node", cluster.node, check=False).stdout,
        cluster.log_tail(60),
    ])


def recovers(hub, cluster, users, user, running_job) -> float:
    """The first spawn after the controller is back succeeds (no failed spawn first); return its
    seconds until ready. Afterwards only the kept server's job is left in the queue: nothing of
    the failed spawn holds the node."""
    started = time.monotonic()
    try:
        spawn(hub, user)
    except Exception:
        print(cluster_report(cluster), file=sys.stderr)
        raise
    took = time.monotonic() - started
    hub.stop_server(user)
    wait_until(lambda: queue(cluster) == {running_job: "RUNNING"}, timeout=30,
               message=f"only the kept job left (squeue: {queue(cluster)})")
    assert running_answers(hub, users)
    return took


@pytest.fixture(scope="module")
def running_job(slurm_hub, users, cluster):
    job = slurm_hub.server_model(users["running"])["state"]["child_state"]["job_id"]
    assert queue(cluster) == {job: "RUNNING"}
    return job


def test_slurmctld_restart_running_job_unharmed_next_spawn_works(slurm_hub, users, cluster, running_job):
    took = restart(cluster.controller())
    assert queue(cluster) == {running_job: "RUNNING"}
    assert running_answers(slurm_hub, users)
    ready = recovers(slurm_hub, cluster, users, users["after-restart"], running_job)
    print(f"slurmctld restart: back after {took:.2f} s; the job kept running; the next spawn was ready {ready:.2f} s later")


def fails_bounded_then_recovers(hub, cluster, users, fault, user, running_job, what) -> None:
    """During ``fault`` (a context manager) a spawn fails within :data:`FAILED_WITHIN` naming
    SLURM, the hub's API and the kept server answer; after it, the first spawn succeeds."""
    with fault:
        (message, waited), slowest = hub_latency_during(hub, lambda: spawn_fails(hub, user))
        assert running_answers(hub, users)  # the notebook's path does not go through slurmctld
    print(f"{what}: spawn failed after {waited:.2f} s ({message!r}); slowest hub API answer {slowest:.2f} s")
    assert "SLURM" in message, message
    assert waited < FAILED_WITHIN, waited
    assert slowest < 2.0, slowest
    print(f"{what}: the first spawn after it was ready {recovers(hub, cluster, users, user, running_job):.2f} s later")


def test_slurmctld_hung_spawn_fails_bounded_naming_slurm_leaves_no_job(slurm_hub, users, cluster, running_job):
    fails_bounded_then_recovers(slurm_hub, cluster, users, hung(cluster.controller()), users["during-hang"],
                                running_job, "slurmctld hung (SIGSTOP)")


def test_slurmctld_refusing_spawn_fails_bounded_naming_slurm(slurm_hub, users, cluster, running_job):
    fails_bounded_then_recovers(slurm_hub, cluster, users, refusing(cluster.controller()), users["during-stop"],
                                running_job, "slurmctld stopped")
    slurm_hub.stop_server(users["running"])
    wait_until(lambda: queue(cluster) == {}, timeout=30, message="no job left in the queue")
    for name in users.values():
        wait_until(lambda: user_processes(name) == [], timeout=30, message=f"no process of {name} left")
