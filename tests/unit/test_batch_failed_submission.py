"""A failed SLURM start leaves no job: its submission's own job name is cancelled until the
controller answers (multiplespawner/children/batch.py)."""

import asyncio
from types import SimpleNamespace

import pytest
from batchspawner import SlurmSpawner as RealSlurmSpawner
from jupyterhub.spawner import LocalProcessSpawner

from multiplespawner.children import adapter_for, batch


class SlurmSpawner:
    """Stands in for batchspawner's (the adapter knows the batch system by the class's name):
    sbatch times out, then scancel fails ``down`` times (the controller still frozen)."""

    exec_prefix = "sudo -E -u {username}"

    def __init__(self, down: int):
        self.environment = {"KEEP": "1"}
        self.user = SimpleNamespace(name="ada")
        self.down = down
        self.commands = []

    def get_req_subvars(self):
        return {"username": self.user.name}

    def get_env(self):
        return dict(self.environment)

    async def start(self):
        raise RuntimeError("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation")

    async def run_command(self, cmd, env=None):
        self.commands.append((cmd, env["SBATCH_JOB_NAME"]))
        if len(self.commands) <= self.down:
            raise RuntimeError("scancel: error: Unable to contact slurm controller (connect failure)")
        return ""


@pytest.fixture(autouse=True)
def short_pauses(monkeypatch):
    monkeypatch.setattr(batch, "ORPHAN_RETRY_FIRST_SECONDS", 0.01)
    monkeypatch.setattr(batch, "ORPHAN_CONFIRM_SECONDS", 0.01)


async def test_failed_slurm_start_cancels_its_named_job_once_the_controller_answers():
    child = SlurmSpawner(down=2)
    with pytest.raises(RuntimeError, match="Socket timed out"):
        await adapter_for(RealSlurmSpawner).start(child)
    name = child.environment["SBATCH_JOB_NAME"]
    assert name.startswith("jupyterhub-") and child.environment["KEEP"] == "1"
    await asyncio.gather(*batch._CLEANUPS)
    # two refused while the controller was down, then cancelled twice (once more after it answered)
    assert child.commands == [(f"sudo -E -u ada scancel --name={name}", name)] * 4
    assert not batch._CLEANUPS


async def test_every_submission_gets_a_name_of_its_own():
    names = set()
    for _ in range(3):
        child = SlurmSpawner(down=0)
        with pytest.raises(RuntimeError):
            await adapter_for(RealSlurmSpawner).start(child)
        names.add(child.environment["SBATCH_JOB_NAME"])
    await asyncio.gather(*batch._CLEANUPS)
    assert len(names) == 3


async def test_other_children_start_as_they_are():
    child = SimpleNamespace(environment={}, start=lambda: "http://127.0.0.1:1")  # a plain, non-async start
    assert await adapter_for(LocalProcessSpawner).start(child) == "http://127.0.0.1:1"
    assert child.environment == {}
