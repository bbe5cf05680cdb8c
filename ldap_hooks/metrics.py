"""Prometheus metrics of the LDAP pre-spawn hook (prometheus_client's default registry, which
JupyterHub serves at ``/hub/metrics``; see docs/metrics.md).

Labels take values from :data:`OUTCOMES` and :data:`FAILURE_REASONS` only: never a user name,
a DN or anything else from the user's data.
"""

import asyncio
import functools
import time

from prometheus_client import Counter, Histogram

#: ``outcome`` label values of the hook's duration
OUTCOMES = ("found", "created", "failed")
#: ``reason`` label values of a failure: the ``LDAPSpawnError`` reasons (see errors.py), then
#: ``other`` for anything else that stopped the hook
FAILURE_REASONS = ("ldap_user_data", "ldap_unavailable", "ldap_busy", "ldap_error", "other")

ENTRY_SETUP_DURATION = Histogram(
    "ldap_hooks_entry_setup_duration_seconds",
    "Seconds the pre-spawn hook took to find (outcome=found) or create (outcome=created) the "
    "user's entry, or to fail (outcome=failed)",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf")),
)

ENTRY_SETUP_FAILURES = Counter(
    "ldap_hooks_entry_setup_failures",
    "Spawns the pre-spawn hook stopped, by reason",
    ["reason"],
)
for _reason in FAILURE_REASONS:  # every series exists from the start, at 0
    ENTRY_SETUP_FAILURES.labels(reason=_reason)


def measured(hook):
    """Decorate the entry-setup hook (``async (spawner) -> EntryResult``): its duration and
    outcome (``created`` from the result), and each failure's reason, are recorded."""

    @functools.wraps(hook)
    async def timed(spawner):
        began = time.monotonic()
        try:
            result = await hook(spawner)
        except (Exception, asyncio.CancelledError) as e:
            reason = getattr(e, "reason", None)
            ENTRY_SETUP_FAILURES.labels(reason=reason if reason in FAILURE_REASONS else "other").inc()
            ENTRY_SETUP_DURATION.labels(outcome="failed").observe(time.monotonic() - began)
            raise
        outcome = "created" if result.created else "found"
        ENTRY_SETUP_DURATION.labels(outcome=outcome).observe(time.monotonic() - began)
        return result

    return timed
