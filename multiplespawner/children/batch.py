"""batchspawner children (SLURM, Torque, ...): the chosen resources become the job's request;
a failed SLURM submission leaves no job behind."""

from __future__ import annotations

import asyncio
import logging
import math
import secrets

from .base import ChildAdapter, register

log = logging.getLogger(__name__)

#: how long (seconds) a SLURM job of a failed start is looked for: a controller frozen while it
#: took the submission queues the job when it resumes, which may be much later
ORPHAN_SEARCH_SECONDS = 3600
#: the pauses (seconds) between two attempts to cancel it while the controller does not answer:
#: the first, doubled after each attempt up to the longest
ORPHAN_RETRY_FIRST_SECONDS = 1.0
ORPHAN_RETRY_MAX_SECONDS = 30
#: the pause (seconds) before cancelling once more after the controller first answered: a
#: submission it read from its socket when it resumed may still have been on its way
ORPHAN_CONFIRM_SECONDS = 2

#: the clean-up tasks still running (the event loop keeps only weak references to tasks)
_CLEANUPS: set[asyncio.Task] = set()


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

    async def start(self, child):
        """SLURM: every submission gets a job name of its own (``jupyterhub-<random>``, through
        ``SBATCH_JOB_NAME``, which beats the script's ``#SBATCH --job-name`` but not a
        ``--job-name`` in the template's ``batch_submit_cmd``). If the start fails or is
        cancelled, every job of that name is cancelled in the background, retried until the
        controller answers (for up to :data:`ORPHAN_SEARCH_SECONDS`): an sbatch that timed out
        against a frozen controller gets no job id, but the controller queues the job anyway
        when it resumes, and that job would hold the node's CPUs and memory, unknown to the hub,
        until its time limit. Other batch systems: their child's start alone."""
        if _system(child) != "SLURM":
            return await super().start(child)
        name = f"jupyterhub-{secrets.token_hex(8)}"
        child.environment = {**child.environment, "SBATCH_JOB_NAME": name}
        try:
            return await super().start(child)
        except BaseException:
            task = asyncio.ensure_future(_cancel_jobs_named(child, name))
            _CLEANUPS.add(task)
            task.add_done_callback(_CLEANUPS.discard)
            raise

    def failure_reason(self, child, error) -> str | None:
        """A job the batch system did not start within the child's ``start_timeout``, or a
        batch command that failed (batchspawner raises its stderr), is reported naming the batch
        system: a frozen controller shows up as sbatch's "Socket timed out", a stopped one as
        "Unable to contact slurm controller"."""
        system = _system(child) or "The batch system"
        if isinstance(error, TimeoutError):
            return (f"{system} did not start the job within {child.start_timeout:g} s (start_timeout): "
                    "its controller may be down or the queue full; please try again later")
        if isinstance(error, RuntimeError):  # batchspawner's: a command's stderr, or the job's fate
            return f"{system} could not take the job: {error}"
        return None


async def _cancel_jobs_named(child, name: str) -> None:
    """``scancel --name=NAME`` as the child's user (through its ``exec_prefix``), retried with a
    growing pause while the controller does not answer, and once more
    :data:`ORPHAN_CONFIRM_SECONDS` after it first did."""
    from batchspawner.batchspawner import format_template  # loaded: the child is a batchspawner

    command = f"{format_template(child.exec_prefix, **child.get_req_subvars())} scancel --name={name}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ORPHAN_SEARCH_SECONDS
    pause, answered = ORPHAN_RETRY_FIRST_SECONDS, 0
    while answered < 2:
        try:
            await child.run_command(command, env=child.get_env())
        except Exception as e:  # the controller frozen or down: sbatch's own errors
            if loop.time() + pause > deadline:
                log.warning("Gave up cancelling SLURM jobs named %s (left by a failed start of %s): %s",
                            name, child.user.name, e)
                return
            await asyncio.sleep(pause)
            pause = min(2 * pause, ORPHAN_RETRY_MAX_SECONDS)
            continue
        answered += 1
        if answered == 1:
            await asyncio.sleep(ORPHAN_CONFIRM_SECONDS)
    log.info("Cancelled any SLURM job named %s left by a failed start of %s", name, child.user.name)


def _system(child) -> str | None:
    """The batch system's name in messages, from the child's batchspawner class."""
    return next((_SYSTEMS[c.__name__] for c in type(child).__mro__ if c.__name__ in _SYSTEMS), None)


#: batchspawner's spawner classes -> the batch system's name in messages
_SYSTEMS = {
    "SlurmSpawner": "SLURM", "TorqueSpawner": "Torque", "MoabSpawner": "Moab", "PBSSpawner": "PBS",
    "LsfSpawner": "LSF", "CondorSpawner": "HTCondor", "GridengineSpawner": "Grid Engine",
}
