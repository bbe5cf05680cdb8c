"""Fault cells for SLURM under the batch template (docs/reliability.md).

The batch template of ``test_multiple_batch`` (batchspawner's SlurmSpawner through
MultipleSpawner, the real notebook in a job on the one-node cluster of
:mod:`tests.fixtures.slurm`); the cluster's ``slurmctld`` is restarted, frozen (SIGSTOP) and
stopped by the PID the fixture started while one user's job keeps running.
"""

import json
import time

from tests.fixtures.faults import hung, refusing, restart
from tests.fixtures.procs import wait_until
from tests.integration.child_spawners import HUB_ENV
from tests.integration.test_faults import failed_spawn, hub_latency_during
from tests.integration.test_multiple_batch import BATCH_HUB_CONFIG, batch_catalogue, squeue_job
from tests.integration.test_multiple_hub import hub_config

#: the template's start_timeout in this cell (seconds): what bounds a spawn SLURM never starts
START_TIMEOUT = 60


def test_slurmctld_restart_hang_refuse(slurm, hub_factory, unix_user, tmp_path):
    tmp_path.chmod(0o755)
    catalogue = batch_catalogue(slurm)
    catalogue["templates"][0]["spawner"]["kwargs"]["start_timeout"] = START_TIMEOUT
    (tmp_path / "catalogue.json").write_text(json.dumps(catalogue))
    hub = hub_factory(hub_config(tmp_path / "catalogue.json", BATCH_HUB_CONFIG), env={**HUB_ENV, **slurm.env})
    running, newcomer = unix_user("sr"), unix_user("sn")
    for user in (running, newcomer):
        hub.create_user(user)
    options = {"template": "slurm-job"}
    job_id = hub.spawn(running, user_options=options, timeout=90)["state"]["child_state"]["job_id"]
    controller = slurm.controller()

    def job_runs() -> bool:
        job = squeue_job(slurm, job_id)
        return job is not None and job.state == "RUNNING"

    def answers() -> bool:
        return hub.server_request(running, "api/status", timeout=10).status_code == 200

    took = restart(controller)
    assert job_runs() and answers()
    started = time.monotonic()
    hub.spawn(newcomer, user_options=options, timeout=90)
    print(f"slurmctld restart: back after {took:.2f} s; the job kept running; "
          f"the next spawn was ready {time.monotonic() - started:.2f} s later")
    hub.stop_server(newcomer)

    with hung(controller):
        (message, waited), slowest = hub_latency_during(hub, lambda: failed_spawn(hub, newcomer, options))
        assert answers()  # the notebook's path does not go through slurmctld
    print(f"slurmctld hung: spawn failed after {waited:.2f} s ({message!r}); slowest hub API answer {slowest:.2f} s")
    assert waited < START_TIMEOUT + 30, waited
    assert slowest < 2.0, slowest
    assert "SLURM" in message, message

    with refusing(controller):
        (message, waited), slowest = hub_latency_during(hub, lambda: failed_spawn(hub, newcomer, options))
        assert answers()
    print(f"slurmctld stopped: spawn failed after {waited:.2f} s ({message!r}); slowest hub API answer {slowest:.2f} s")
    assert "SLURM" in message, message
    assert waited < 15, waited

    assert job_runs()
    hub.spawn(newcomer, user_options=options, timeout=90)
    for user in (newcomer, running):
        hub.stop_server(user)
    wait_until(lambda: slurm.jobs() == [], timeout=30, message="no job left")
