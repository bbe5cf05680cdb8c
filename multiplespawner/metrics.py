"""MultipleSpawner's Prometheus metrics, served with JupyterHub's own at ``/hub/metrics``.

The metrics live in prometheus_client's default registry, which JupyterHub serves; they exist
in every process that imports the catalogue (the hub, and the template editor, which serves
none). docs/metrics.md lists every metric with its labels, meaning and example queries.

Cardinality is bounded by construction: label values come only from the catalogue (template,
provider and deployment names, pool host addresses) and from the fixed sets below. A user
name, a server name or a template name that a user sent and the catalogue does not have never
becomes a label value (``NO_TEMPLATE`` stands for "no template of the catalogue").

Imports nothing of the suite (the catalogue imports it).
"""

from __future__ import annotations

import asyncio
import functools
import time

from prometheus_client import Counter, Gauge, Histogram

#: a spawn's phases, in order; local, container and batch templates have only ``start``
PHASES = ("create", "wait", "configure", "start")

#: the ``reason`` labels a failure is counted under (a ``SpawnException``'s own ``reason``
#: when it is one of these; see :func:`failure_reason`)
FAILURE_REASONS = frozenset({
    "invalid_user_options",  # refused choice (400)
    "catalogue_error", "template_error", "config_error",  # the operator's setup
    "capacity", "quota", "queue_timeout",  # no place: full pool, quota, gave up waiting in line
    "machine_create", "machine_wait", "machine_configure", "machine_start",  # machine phases
    "start_failed", "timeout",  # the child's start
    "mount_failed",  # a required storage mount of the template (docs/mounts.md)
    "ldap_user_data", "ldap_unavailable", "ldap_busy", "ldap_error",  # ldap_hooks' pre-spawn hook
    "cancelled",  # the spawn was cancelled (user stopped it while pending, hub's start_timeout)
    "error",  # an exception that is no SpawnException (a bug, or an operator's hook)
    "other",  # a SpawnException with a reason not listed here
})

#: the ``template`` label of a failure no catalogue template can be named for (a template name
#: cannot start with "(")
NO_TEMPLATE = "(none)"

SPAWN_PHASE_DURATION = Histogram(
    "multiplespawner_spawn_phase_duration_seconds",
    "Seconds each phase of a successful spawn took (create, wait, configure: machine-backed "
    "templates; start: until the child spawner's start returned)",
    ["template", "provider", "phase"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, float("inf")),
)

SPAWN_FAILURES = Counter(
    "multiplespawner_spawn_failures",
    "Spawns that failed or were refused, by template and reason",
    ["template", "reason"],
)

POOL_HOST_SERVERS = Gauge(
    "multiplespawner_pool_host_servers",
    "Servers using a bare-metal pool host (running or starting)",
    ["deployment", "host"],
)

POOL_HOST_CAPACITY = Gauge(
    "multiplespawner_pool_host_capacity",
    "Servers a bare-metal pool host takes at most",
    ["deployment", "host"],
)

CATALOGUE_RELOAD_ERRORS = Counter(
    "multiplespawner_catalogue_reload_errors",
    "Catalogue loads that failed (a broken edit; the last good catalogue stays in force)",
)

ORPHAN_PROCESSES_STOPPED = Counter(
    "multiplespawner_orphan_processes_stopped",
    "Local notebook processes of this hub that no server owned, stopped when the hub started "
    "(when=hub_start) or before their server started again (when=spawn)",
    ["when"],
)
for _when in ("hub_start", "spawn"):  # both series exist from the start, at 0
    ORPHAN_PROCESSES_STOPPED.labels(when=_when)


def observe_phase(template: str, provider: str, phase: str, seconds: float) -> None:
    """Record that ``phase`` of a spawn of ``template`` on ``provider`` took ``seconds``."""
    SPAWN_PHASE_DURATION.labels(template=template, provider=provider, phase=phase).observe(seconds)


class PhaseClock:
    """Times the consecutive phases of one spawn: :meth:`enter` ends the current phase (its
    duration is recorded) and starts the next; :meth:`done` ends the last. :attr:`phase` is the
    phase under way, e.g. for naming the step that failed (a failed phase is not recorded)."""

    def __init__(self, template: str, provider: str, phase: str):
        self.template, self.provider = template, provider
        self.phase, self._began = phase, time.monotonic()

    def enter(self, phase: str) -> None:
        self.done()
        self.phase, self._began = phase, time.monotonic()

    def done(self) -> None:
        observe_phase(self.template, self.provider, self.phase, time.monotonic() - self._began)


def failure_reason(error: BaseException) -> str:
    """The ``reason`` label of a failed spawn: one of :data:`FAILURE_REASONS`."""
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    reason = getattr(error, "reason", None)
    if isinstance(reason, str) and reason in FAILURE_REASONS:
        return reason
    if isinstance(error, TimeoutError):
        return "timeout"
    return "other" if isinstance(reason, str) and reason else "error"


def counts_failures(method):
    """Decorate a spawner's coroutine method: a failure is counted in ``SPAWN_FAILURES`` (the
    template label is the spawner's ``metrics_template``) and raised again unchanged."""

    @functools.wraps(method)
    async def counted(spawner, *args, **kwargs):
        try:
            return await method(spawner, *args, **kwargs)
        except (Exception, asyncio.CancelledError) as e:
            SPAWN_FAILURES.labels(template=spawner.metrics_template, reason=failure_reason(e)).inc()
            raise

    return counted
