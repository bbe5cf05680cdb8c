"""LocalProcessSpawner children: the notebook as a process on the hub's machine.

CPU and memory become ``CPU_LIMIT``/``MEM_LIMIT`` in the notebook's environment (JupyterHub does
not enforce them for local processes); GPUs are not mapped. The notebook process starts at a
lower CPU weight than the hub (:meth:`LocalProcessAdapter.lower_cpu_weight`). Before it starts,
processes of the same server that no server owns are stopped (:mod:`.local_orphans`).
"""

from __future__ import annotations

import os

from .base import ChildAdapter, CpuWeight, register
from .local_orphans import sweep_before_start


def lower_priority_of(pid: int, nice: int) -> None:
    """Raise process ``pid``'s nice value to ``nice`` (never lower it), and its autogroup's.

    Called by the hub right after LocalProcessSpawner's ``Popen`` returned, not in the child
    between fork and exec: ``Popen`` waits on the hub's event loop until the child has exec'd,
    so a child that lowered its own priority first would make the hub wait for a starved
    process on a busy machine. LocalProcessSpawner starts every notebook in a new session, and
    on kernels with ``sched_autogroup_enabled`` (Debian's and Ubuntu's default) every session is
    a scheduling group of its own that competes with the hub's group as an equal whatever the
    nice values inside it: the group's own nice (``/proc/PID/autogroup``) is what lowers the
    notebook's weight there. Where there is no autogroup the process's nice value does it.
    Never raises: a notebook runs even where its weight cannot be changed (a process already
    gone, no permission, no autogroup). Two syscalls and a small /proc write: no I/O wait.
    """
    try:
        if nice > os.getpriority(os.PRIO_PROCESS, pid):
            os.setpriority(os.PRIO_PROCESS, pid, nice)
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(str(nice))
    except OSError:
        pass


@register
class LocalProcessAdapter(ChildAdapter):
    adapts = "jupyterhub.spawner:LocalProcessSpawner"

    async def before_start(self, spawner, child) -> None:
        """Mark the notebook's environment with this hub and stop the server's orphaned
        processes (:func:`.local_orphans.sweep_before_start`), unless
        ``MultipleSpawner.stop_orphaned_processes`` is off."""
        if spawner.stop_orphaned_processes:
            await sweep_before_start(spawner, child)

    def lower_cpu_weight(self, child, weight: CpuWeight) -> None:
        """Apply :func:`lower_priority_of` to the notebook's process as soon as the child records
        its PID (also a PID restored from state after a hub restart)."""
        if weight.nice <= 0:
            return

        def lower(change):
            if change.new:
                lower_priority_of(change.new, weight.nice)

        child.observe(lower, "pid")
