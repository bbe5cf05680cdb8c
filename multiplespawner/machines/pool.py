"""Bare-metal pools: which host a server may use, derived from the hub database.

Pool allocation is derived, not stored separately: a pool host's users are the servers whose
spawner state (in the hub database) names it, plus claims made in this hub process that are not
in the database yet (a spawn in progress). A crashed spawn therefore frees its claim, and a hub
restart keeps every running server's claim. An asyncio lock makes claims in one process atomic;
JupyterHub runs one hub process per database.

Configuration cache: a pool host's last configuration hash (host, admin account, host key,
playbooks, variables) is kept per host in this process, and after a hub restart taken from the
running servers' states in the database (the newest ``configured_at``). A run that fails, or is
under way, makes the host's hash unknown, so the next spawn configures it again.

The database queries use the hub's own in-memory SQLAlchemy session (no I/O on the event loop).
"""

from __future__ import annotations

import asyncio

from ..drain import is_drained, read_drained
from ..errors import SpawnError
from ..metrics import POOL_HOST_CAPACITY, POOL_HOST_SERVERS

#: the pseudo-provider name of pool hosts in :class:`~multiplespawner.providers.base.Machine` records
POOL = "pool"

#: owner (``user/server``) -> (deployment name, host id) of claims made in this process
_CLAIMS: dict[str, tuple[str, str]] = {}
_CLAIMS_LOCK = asyncio.Lock()  # binds to the hub's loop on first contended use
#: (deployment name, host id) -> hash of the pool host's last configuration (None: unknown)
_CONFIG_HASHES: dict[tuple, str | None] = {}
_HOST_LOCKS: dict[tuple, asyncio.Lock] = {}


class PoolFullError(SpawnError):
    """Every host of a pool is in use: the spawn is refused at once (503, reason ``capacity``)."""

    def __init__(self, message: str):
        super().__init__(message, reason="capacity", status_code=503)


def owner(spawner) -> str:
    """The server a claim or lease belongs to: ``user/server``."""
    return f"{spawner.user.name}/{spawner.name}"


def persisted_leases(spawner) -> dict[str, dict]:
    """owner -> lease state of every server whose state in the hub database holds a machine."""
    db = getattr(spawner, "_deprecated_db_session", None)
    if db is None:
        return {}
    from jupyterhub import orm

    leases = {}
    for orm_spawner in db.query(orm.Spawner).filter(orm.Spawner.state.isnot(None)):
        lease = (orm_spawner.state or {}).get("machine")
        if lease and orm_spawner.user is not None:
            leases[f"{orm_spawner.user.name}/{orm_spawner.name}"] = lease
    return leases


def pool_host_id(host: dict) -> str:
    """A pool host's id in leases and claims: ``address:port``."""
    return f"{host['address']}:{int(host.get('port', 22))}"


def pool_usage(spawner, deployment: str, exclude: str = "") -> dict[str, set]:
    """Host id -> owners using it in pool ``deployment`` (database state and this process)."""
    owners: dict[str, tuple] = {}
    for who, lease in persisted_leases(spawner).items():
        if lease.get("kind") == POOL:
            owners[who] = (lease["deployment"], lease["machine"]["id"])
    owners.update(_CLAIMS)
    usage: dict[str, set] = {}
    for who, (dep, host_id) in owners.items():
        if dep == deployment and who != exclude:
            usage.setdefault(host_id, set()).add(who)
    return usage


async def claim_host(spawner, deployment: str, hosts: list[dict], drain_file: str = "") -> dict:
    """Claim one of ``hosts`` (pool ``deployment``'s) with capacity left for ``spawner``'s
    server, skipping the hosts ``drain_file`` drains (see :mod:`multiplespawner.drain`);
    return it.

    Raises :class:`PoolFullError` (503) if every host is at capacity or drained (or the drain
    file cannot be read: a drain is never ignored).
    """
    who = owner(spawner)
    try:
        drained = await asyncio.to_thread(read_drained, drain_file) if drain_file else {}
    except ValueError as e:
        spawner.log.error("%s: %s", spawner._log_name, e)
        raise PoolFullError(f"The hosts of {deployment!r} cannot take servers now (the hub's list of "
                            "drained hosts is unreadable; its administrators have been told).")
    open_hosts = [h for h in hosts if not is_drained(drained, pool_host_id(h), h["address"])]
    if hosts and not open_hosts:
        raise PoolFullError(f"Every host of {deployment!r} is drained for maintenance; try again later "
                            "or choose another template.")
    async with _CLAIMS_LOCK:
        usage = pool_usage(spawner, deployment, exclude=who)
        for host in open_hosts:
            host_id = pool_host_id(host)
            if len(usage.get(host_id, ())) < int(host.get("capacity", 1)):
                _CLAIMS[who] = (deployment, host_id)
                publish_occupancy(spawner, deployment, hosts)
                return host
        total = sum(int(h.get("capacity", 1)) for h in open_hosts)
        closed = f", {len(hosts) - len(open_hosts)} more drained" if len(open_hosts) < len(hosts) else ""
        raise PoolFullError(
            f"All {len(open_hosts)} hosts of {deployment!r} are in "
            f"use ({total} servers at most{closed}); try again later or choose another template."
        )


def publish_occupancy(spawner, deployment: str, hosts: list[dict], exclude: str = "") -> None:
    """Set the occupancy gauges of pool ``deployment``'s ``hosts`` from :func:`pool_usage`
    (``exclude``: a server being released, whose state still names its host)."""
    usage = pool_usage(spawner, deployment, exclude=exclude)
    for host in hosts:
        host_id = pool_host_id(host)
        POOL_HOST_SERVERS.labels(deployment=deployment, host=host_id).set(len(usage.get(host_id, ())))
        POOL_HOST_CAPACITY.labels(deployment=deployment, host=host_id).set(int(host.get("capacity", 1)))


def drop_claim(who: str) -> None:
    """Forget this process's claim of ``who`` (the database state then says what is used)."""
    _CLAIMS.pop(who, None)


def host_lock(host: tuple) -> asyncio.Lock:
    """The lock that lets one configuration run at a time on pool host ``(deployment, id)``."""
    return _HOST_LOCKS.setdefault(host, asyncio.Lock())


def last_config_hash(spawner, host: tuple) -> str | None:
    """The hash of pool host ``host``'s last configuration: this process's, else the database's."""
    if host in _CONFIG_HASHES:
        return _CONFIG_HASHES[host]
    configured = [
        (lease.get("configured_at", 0), lease["config_hash"])
        for lease in persisted_leases(spawner).values()
        if lease.get("kind") == POOL and lease.get("config_hash")
        and (lease.get("deployment"), lease.get("machine", {}).get("id")) == host
    ]
    return max(configured)[1] if configured else None


def remember_config_hash(host: tuple, config_hash: str | None) -> None:
    """Record pool host ``host``'s configuration hash (None while a run is under way or failed)."""
    _CONFIG_HASHES[host] = config_hash
