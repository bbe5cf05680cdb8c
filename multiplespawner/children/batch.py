"""batchspawner children (SLURM, Torque, ...): the chosen resources become the job's request."""

from __future__ import annotations

import math

from .base import ChildAdapter, register


@register
class BatchAdapter(ChildAdapter):
    adapts = "batchspawner.batchspawner:BatchSpawnerBase"
    templated_kwargs = ("batch_script", "exec_prefix", "batch_submit_cmd", "batch_query_cmd", "batch_cancel_cmd")

    def resource_kwargs(self, choice) -> dict:
        """``req_nprocs`` (whole CPUs, rounded up), ``req_memory`` (``<MiB>M``, as sbatch's
        ``--mem`` takes it) and, for spawners whose script has one (SlurmSpawner), ``req_gres``
        (``gpu:<n>``)."""
        kwargs = super().resource_kwargs(choice)
        resources = choice.resources
        if "cpu" in resources:
            kwargs["req_nprocs"] = str(math.ceil(resources["cpu"]))
        if "memory_mb" in resources:
            kwargs["req_memory"] = kwargs["mem_limit"]
        if resources.get("gpus") and "req_gres" in self.cls.class_traits():
            kwargs["req_gres"] = f"gpu:{int(resources['gpus'])}"
        return kwargs

    def failure_reason(self, child, error) -> str | None:
        """A job the batch system did not start within the child's ``start_timeout``, or a
        batch command that failed (batchspawner raises its stderr), is reported naming the batch
        system: a frozen controller shows up as sbatch's "Socket timed out", a stopped one as
        "Unable to contact slurm controller"."""
        system = next((_SYSTEMS[c.__name__] for c in type(child).__mro__ if c.__name__ in _SYSTEMS),
                      "The batch system")
        if isinstance(error, TimeoutError):
            return (f"{system} did not start the job within {child.start_timeout:g} s (start_timeout): "
                    "its controller may be down or the queue full; please try again later")
        if isinstance(error, RuntimeError):  # batchspawner's: a command's stderr, or the job's fate
            return f"{system} could not take the job: {error}"
        return None


#: batchspawner's spawner classes -> the batch system's name in messages
_SYSTEMS = {
    "SlurmSpawner": "SLURM", "TorqueSpawner": "Torque", "MoabSpawner": "Moab", "PBSSpawner": "PBS",
    "LsfSpawner": "LSF", "CondorSpawner": "HTCondor", "GridengineSpawner": "Grid Engine",
}
