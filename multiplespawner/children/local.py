"""LocalProcessSpawner children: the notebook as a process on the hub's machine.

CPU and memory become ``CPU_LIMIT``/``MEM_LIMIT`` in the notebook's environment (JupyterHub does
not enforce them for local processes); GPUs are not mapped. The notebook process starts at a
lower CPU weight than the hub (:meth:`LocalProcessAdapter.lower_cpu_weight`).
"""

from __future__ import annotations

import os

from .base import ChildAdapter, CpuWeight, register

AUTOGROUP = "/proc/self/autogroup"


def lower_own_priority(nice: int) -> None:
    """Raise the calling process's nice value to ``nice`` (never lower it), and its autogroup's.

    Runs in the notebook's process between fork and exec. LocalProcessSpawner starts every
    notebook in a new session, and on kernels with ``sched_autogroup_enabled`` (Debian's and
    Ubuntu's default) every session is a scheduling group of its own that competes with the
    hub's group as an equal whatever the nice values inside it: the group's own nice
    (``/proc/self/autogroup``) is what lowers the notebook's weight there. Where there is no
    autogroup the process's nice value does it. Neither raises an error: a notebook starts even
    where the weight cannot be changed.
    """
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    try:
        with open(AUTOGROUP, "w") as f:
            f.write(str(nice))
    except OSError:
        pass  # no autogroup (kernel option off or not built in)


@register
class LocalProcessAdapter(ChildAdapter):
    adapts = "jupyterhub.spawner:LocalProcessSpawner"

    def lower_cpu_weight(self, child, weight: CpuWeight) -> None:
        """Run :func:`lower_own_priority` in the notebook's process before the child's own
        ``preexec_fn`` (which drops to the user's uid), by wrapping ``make_preexec_fn``."""
        if weight.nice <= 0:
            return
        make_preexec_fn = child.make_preexec_fn

        def make_lowered_preexec_fn(name):
            switch_user = make_preexec_fn(name)

            def preexec():
                lower_own_priority(weight.nice)
                switch_user()

            return preexec

        child.make_preexec_fn = make_lowered_preexec_fn
