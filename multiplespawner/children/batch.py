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
