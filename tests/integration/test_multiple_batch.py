"""batch templates through MultipleSpawner in a real hub: batchspawner's SlurmSpawner on a real
one-node SLURM cluster (tests/fixtures/slurm.py).

The notebook is the real ``jupyterhub-singleuser`` of the project venv, started by
``batchspawner-singleuser`` inside the SLURM job as a fresh Unix user; the job is submitted with
``sudo -E -u USER sbatch`` by the hub, as batchspawner does on a real cluster.
"""

import json
import subprocess
from pathlib import Path

from tests.fixtures.procs import wait_until
from tests.integration.child_spawners import HUB_ENV
from tests.integration.test_cloudssh_spawner import user_processes
from tests.integration.test_multiple_hub import hub_config

VENV_BIN = "/opt/jupyterhub-multiplespawner/venv/bin"


def batch_catalogue(slurm) -> dict:
    return {
        "deployments": {"batch": [{"name": "test-cluster", "provider": "slurm"}]},
        "templates": [{
            "name": "slurm-job",
            "display_name": "Notebook as a SLURM job",
            "resource_type": "batch",
            "providers": ["slurm"],
            "resources": {"cpu": {"default": 1, "min": 1, "max": slurm.cpus},
                          "memory_mb": {"default": 256, "min": 128, "max": 1024}},
            # the job's environment is what --export passes on: srun inside it needs SLURM_CONF
            "environment": dict(slurm.env),
            "spawner": {"class": "batchspawner.SlurmSpawner", "kwargs": {
                "cmd": [f"{VENV_BIN}/jupyterhub-singleuser"],
                "args": ["--ip=127.0.0.1"],
                "batchspawner_singleuser_cmd": f"{VENV_BIN}/batchspawner-singleuser",
                "req_partition": slurm.partition,
                "startup_poll_interval": 0.2,
                "start_timeout": 60,
            }},
        }],
    }


#: batchspawner's API handler (``/hub/api/batchspawner``, where the job reports its port) is
#: registered when batchspawner is imported, which must happen before the hub builds its handlers
BATCH_HUB_CONFIG = "import batchspawner  # noqa: F401\n"


def squeue_job(slurm, job_id):
    return next((j for j in slurm.jobs() if j.id == job_id), None)


def notebook_pids(user) -> list[int]:
    """The user's notebook processes (not the ``srun`` that launched them: it listens for
    SLURM's own step I/O)."""
    pids = []
    for pid in user_processes(user):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if Path(argv[0].decode()).name != "srun" and any(b"jupyterhub-singleuser" in a for a in argv):
            pids.append(pid)
    return pids


def job_of(pid) -> str | None:
    """The SLURM job a process belongs to (``SLURM_JOB_ID`` in its environment)."""
    for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if entry.startswith(b"SLURM_JOB_ID="):
            return entry.split(b"=", 1)[1].decode()
    return None


def listening_addresses(pids) -> set[str]:
    out = subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True, check=True).stdout
    return {line.split()[3] for line in out.splitlines() if any(f"pid={pid}," in line for pid in pids)}


def test_slurm_job_runs_the_notebook_with_the_chosen_resources(slurm, hub_factory, unix_user, tmp_path):
    tmp_path.chmod(0o755)
    cat_file = tmp_path / "catalogue.json"
    cat_file.write_text(json.dumps(batch_catalogue(slurm)))
    hub = hub_factory(hub_config(cat_file, BATCH_HUB_CONFIG), env={**HUB_ENV, **slurm.env})
    name = unix_user("sl")
    hub.create_user(name)

    model = hub.spawn(name, user_options={"template": "slurm-job", "cpu": 2, "memory_mb": 512}, timeout=90)
    state = model["state"]
    job_id = state["child_state"]["job_id"]
    assert state["multiple"]["child_class"] == "batchspawner.batchspawner.SlurmSpawner"
    job = squeue_job(slurm, job_id)
    assert job is not None, slurm.jobs()
    assert (job.user, job.state, job.cpus, job.memory_mb, job.node) == (name, "RUNNING", 2, 512, slurm.node)

    # the notebook answers through the proxy; it listens on loopback only (the template's --ip:
    # batchspawner's default is every interface, as a compute node must be reachable from the hub)
    r = hub.server_request(name, "api/status")
    assert r.status_code == 200, r.text
    pids = notebook_pids(name)
    addresses = listening_addresses(pids)
    assert addresses and all(a.startswith("127.0.0.1:") for a in addresses), addresses
    assert all(job_of(pid) == job_id for pid in pids)  # it runs inside that job

    hub.stop_server(name)
    wait_until(lambda: squeue_job(slurm, job_id) is None, timeout=20, message="job left the queue")
    wait_until(lambda: user_processes(name) == [], timeout=20, message="the job's processes gone")
