"""Quotas and the waiting line: how many servers of a template may run at once, and who is next.

A template's ``quota`` (see docs/catalogue.md) limits the servers of that template that hold a
*place*: a spawn takes a place when it is admitted (before the operator's ``pre_spawn_hook``,
before any machine is claimed) and gives it back when the server stops, is found gone by
``poll``, runs out of session time, or fails to start. Places are counted from the hub's real
server state: every active spawner of every user the hub has loaded whose ``quota_place`` is
set. Nothing else is kept, so after a hub restart the restored servers (``load_state`` sets
their place again) are what counts.

The hub is one process with one event loop; a decision (count, then take) never awaits, so two
concurrent spawns can never both take the last place.

Over quota without ``queue``: a 429 :class:`~multiplespawner.errors.SpawnError`. With
``queue: true`` the spawn waits in its template's line, in order of arrival, reporting its
position and an estimate as progress events, and is admitted when a place frees; it gives up
after ``queue_timeout`` seconds with a 429 saying so. Cancelling the pending spawn (the hub
cancels the spawn's task) takes it out of the line. A hub restart ends the waits (they live in
the hub process); the user's next spawn form says the place was lost (:func:`lost_place_notice`).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily

from .catalogue import Template
from .errors import SpawnError

#: Seconds between re-counts of a waiter's chances even when no release was announced (a
#: place can also free without passing through :meth:`AdmissionControl.release`).
RECHECK_SECONDS = 5.0
#: Default ``quota.queue_timeout`` in seconds.
DEFAULT_QUEUE_TIMEOUT = 600.0
#: How many finished sessions per template the estimate looks at.
RECENT_SESSIONS = 20
#: The pool of a ``per: group`` template for users who may use it without being in one of its
#: groups (listed in ``access.users``, or admins); a ``per: template`` quota has only this one.
OTHERS = ""

#: The gauges (name, help), computed when scraped (see :class:`_Gauges`).
RUNNING_SERVERS = ("multiplespawner_running_servers", "Servers holding a place of a template (starting or running)")
QUEUE_LENGTH = ("multiplespawner_queue_length", "Spawns waiting in a template's line for a place")


@dataclass(frozen=True)
class Quota:
    """A template's ``quota``, with defaults filled in.

    ``running``: places (None: no limit), for the whole template or, with ``per_group``, for
    each of the template's ``access.groups`` (plus one pool as large for users outside them);
    ``per_user``: servers of the template one user may hold or wait for at once (None: no
    limit); ``queue``: wait for a place instead of being refused; ``queue_timeout``: seconds a
    spawn waits at most.
    """

    running: int | None = None
    per_group: bool = False
    per_user: int | None = None
    queue: bool = False
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT

    @classmethod
    def of(cls, spec: dict) -> "Quota | None":
        """The quota of a template spec, or None if it has none."""
        quota = spec.get("quota")
        if not quota:
            return None
        return cls(quota.get("running"), quota.get("per") == "group", quota.get("per_user"),
                   bool(quota.get("queue")), float(quota.get("queue_timeout", DEFAULT_QUEUE_TIMEOUT)))

    def pools_for(self, spec: dict, groups: Iterable[str]) -> tuple[str, ...]:
        """The pools a user of ``groups`` may take a place from, in the template's group order."""
        if not self.per_group:
            return (OTHERS,)
        mine = set(groups)
        pools = tuple(g for g in spec.get("access", {}).get("groups", []) if g in mine)
        return pools or (OTHERS,)


@dataclass(frozen=True)
class Place:
    """A place held by one server: its template, the pool it counts against, its user and
    when it was taken (Unix time)."""

    template: str
    pool: str
    user: str
    since: float

    def to_record(self) -> dict:
        return {"pool": self.pool, "since": self.since}

    @classmethod
    def from_record(cls, template: str, user: str, record: dict) -> "Place":
        return cls(template, record.get("pool", OTHERS), user, record.get("since", time.time()))


def over_quota(message: str, reason: str = "quota") -> SpawnError:
    """A spawn refused for want of a place: 429 (too many requests), nothing started."""
    return SpawnError(message, reason=reason, status_code=429)


def _duration(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 120 else f"{seconds / 60:g} min"


def lost_place_notice(waiting: dict) -> str:
    """What the user's next spawn form says about a spawn that waited in line when the hub
    stopped (``waiting``: the template's display name and since when, as stored by the spawner)."""
    since = waiting.get("since")
    when = f" (waiting since {time.strftime('%H:%M', time.gmtime(since))} UTC)" if isinstance(since, (int, float)) else ""
    return (f"Your place in line for {waiting.get('template') or 'your template'}{when} was lost "
            "when the hub restarted. Start again to join the line.")


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, 21st, ..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@dataclass(eq=False)
class _Waiter:
    holder: object
    user: str
    pools: tuple[str, ...]
    display_name: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    said: str = ""


class AdmissionControl:
    """Places and waiting lines for every template of one hub.

    ``census`` returns the hub's active spawners now (each may carry a ``quota_place`` and a
    ``deadline``). :meth:`admit` gives a spawner a place or refuses it (429), :meth:`release`
    takes it back and lets the next in line in.
    """

    def __init__(self, census: Callable[[], Iterable[object]], clock: Callable[[], float] = time.time):
        self._census = census
        self._clock = clock
        self._lines: dict[str, list[_Waiter]] = {}
        self._quotas: dict[str, Quota] = {}
        self._lifetimes: dict[str, float | None] = {}
        self._sessions: dict[str, deque] = {}

    # ---- counting ----------------------------------------------------------------------
    def held(self, template: str) -> list[tuple[object, Place]]:
        """(spawner, place) of every place of ``template`` held now."""
        found = []
        for spawner in self._census():
            place = getattr(spawner, "quota_place", None)
            if place is not None and place.template == template:
                found.append((spawner, place))
        return found

    def line(self, template: str) -> list[_Waiter]:
        return self._lines.setdefault(template, [])

    def _grant(self, template: str) -> None:
        """Admit waiters of ``template`` in order of arrival while their pools have places.

        Never awaits: counting and taking are one step. A waiter whose pools are full does
        not hold back a later one who needs another pool. Every waiter is woken (to admit
        itself or to report its new position).
        """
        quota = self._quotas.get(template)
        line = self.line(template)
        if quota is not None and line:
            counts: dict[str, int] = {}
            for _, place in self.held(template):
                counts[place.pool] = counts.get(place.pool, 0) + 1
            for waiter in list(line):
                pool = next((p for p in waiter.pools
                             if quota.running is None or counts.get(p, 0) < quota.running), None)
                if pool is not None:
                    waiter.holder.quota_place = Place(template, pool, waiter.user, self._clock())
                    counts[pool] = counts.get(pool, 0) + 1
                    line.remove(waiter)
                waiter.wake.set()

    def counts(self) -> dict[str, tuple[int, int]]:
        """Template -> (places held, spawns waiting), for every template seen since the hub started."""
        found = {t: [0, len(line)] for t, line in self._lines.items()}
        for spawner in self._census():
            place = getattr(spawner, "quota_place", None)
            if place is not None:
                found.setdefault(place.template, [0, 0])[0] += 1
        return {t: (held, waiting) for t, (held, waiting) in found.items()}

    # ---- admission ---------------------------------------------------------------------
    async def admit(self, holder, template: Template, user: str, groups: Iterable[str],
                    report: Callable[[str], None]) -> Place:
        """Give ``holder`` (a spawner) a place of ``template``, waiting if its quota says so.

        Sets and returns ``holder.quota_place``. Raises a 429 ``SpawnError`` when the user has
        ``per_user`` servers of it already, when it is full and has no line, or when
        ``queue_timeout`` passes. ``report`` gets a message each time the position in line
        changes. A cancelled wait leaves the line and holds no place.
        """
        spec, display = template.spec, template.display_name
        template = template.name
        quota = Quota.of(spec) or Quota()
        self._quotas[template] = quota
        self._lifetimes[template] = spec.get("lifetime_minutes", {}).get("default")
        line = self.line(template)
        if quota.per_user is not None:
            mine = sum(1 for _, p in self.held(template) if p.user == user) + sum(1 for w in line if w.user == user)
            if mine >= quota.per_user:
                raise over_quota(f"You already have {mine} server{'s' * (mine != 1)} of {display}; "
                                 f"at most {quota.per_user} may run at once. Stop one first.")
        waiter = _Waiter(holder, user, quota.pools_for(spec, groups), display)
        line.append(waiter)
        self._grant(template)
        if holder.quota_place is not None:
            return holder.quota_place
        if not quota.queue:
            line.remove(waiter)
            raise over_quota(f"{display} is full: all {self._capacity(quota, waiter)} places are in use. "
                             "Try again when a server of it has stopped.")
        loop = asyncio.get_running_loop()
        give_up = loop.time() + quota.queue_timeout
        try:
            while holder.quota_place is None:
                message = self.position_message(template, waiter)
                if message != waiter.said:
                    waiter.said = message
                    report(message)
                remaining = give_up - loop.time()
                if remaining <= 0:
                    raise over_quota(
                        f"Gave up waiting for a place of {display} after {_duration(quota.queue_timeout)} "
                        "(the template's queue_timeout). Try again later.", reason="queue_timeout")
                waiter.wake.clear()
                try:
                    await asyncio.wait_for(waiter.wake.wait(), min(remaining, RECHECK_SECONDS))
                except asyncio.TimeoutError:
                    self._grant(template)
        finally:
            if waiter in line:
                line.remove(waiter)
                self._grant(template)  # the others move up
        return holder.quota_place

    def _capacity(self, quota: Quota, waiter: _Waiter) -> int:
        return (quota.running or 0) * len(waiter.pools)

    def release(self, holder) -> None:
        """Take ``holder``'s place back (if it holds one) and let the next in line in."""
        place = getattr(holder, "quota_place", None)
        if place is None:
            return
        holder.quota_place = None
        self._sessions.setdefault(place.template, deque(maxlen=RECENT_SESSIONS)).append(
            max(0.0, self._clock() - place.since))
        self._grant(place.template)

    def restored(self, holder, place: Place) -> None:
        """A server found again after a hub restart holds ``place`` again."""
        holder.quota_place = place
        self.line(place.template)  # seen: its gauges are exported from now on

    # ---- position and estimate ---------------------------------------------------------
    def position_message(self, template: str, waiter: _Waiter) -> str:
        """``3rd in line for GPU notebook, about 4 min`` (or ``..., no estimate yet``)."""
        line = self.line(template)
        ahead = [w for w in line[:line.index(waiter)] if set(w.pools) & set(waiter.pools)]
        position = len(ahead) + 1
        wait = self.estimate(template, waiter, position)
        if wait is None:
            tail = "no estimate yet"
        elif wait < 60:
            tail = "less than a minute"
        else:
            tail = f"about {round(wait / 60)} min"
        return f"{ordinal(position)} in line for {waiter.display_name}, {tail}"

    def typical_session(self, template: str) -> float | None:
        """Median length (seconds) of the template's recent sessions; else its default
        session lifetime; else None."""
        recent = self._sessions.get(template)
        if recent:
            return statistics.median(recent)
        lifetime = self._lifetimes.get(template)
        return 60 * lifetime if lifetime else None

    def estimate(self, template: str, waiter: _Waiter, position: int) -> float | None:
        """Seconds until the ``position``-th waiter for these pools gets a place, or None.

        Each server in the waiter's pools is expected to end at its session deadline, or
        after the typical session (see :meth:`typical_session`) counted from when it took its
        place, whichever comes first. The k-th waiter gets the k-th place to free; beyond the
        number of places, each further round adds one typical session.
        """
        now = self._clock()
        typical = self.typical_session(template)
        ends = []
        for spawner, place in self.held(template):
            if place.pool not in waiter.pools:
                continue
            candidates = [d - now for d in (getattr(spawner, "deadline", None),) if d is not None]
            if typical is not None:
                candidates.append(typical - (now - place.since))
            if not candidates:
                return None
            ends.append(max(0.0, min(candidates)))
        if not ends:
            return 0.0
        ends.sort()
        rounds, index = divmod(position - 1, len(ends))
        if rounds and typical is None:
            return None
        return ends[index] + rounds * (typical or 0.0)


def _active_spawners(users) -> Iterable[object]:
    """Every active spawner of the users the hub has loaded (JupyterHub's ``UserDict``)."""
    for user in list(users.values()):
        for spawner in list(getattr(user, "spawners", {}).values()):
            if spawner.active:
                yield spawner


_CONTROLS: dict[int, tuple[object, AdmissionControl]] = {}


class _Gauges:
    """``multiplespawner_running_servers{template}`` and ``multiplespawner_queue_length{template}``
    in prometheus_client's default registry (the hub serves it at /metrics), counted from the
    hub's spawners when scraped, so they are right after a restart too. Label values are
    template names from the catalogue, never user names."""

    def describe(self):
        return [GaugeMetricFamily(*RUNNING_SERVERS, labels=["template"]),
                GaugeMetricFamily(*QUEUE_LENGTH, labels=["template"])]

    def collect(self):
        running, queue = self.describe()
        totals: dict[str, list[int]] = {}
        for _, control in list(_CONTROLS.values()):
            for template, (held, waiting) in control.counts().items():
                total = totals.setdefault(template, [0, 0])
                total[0] += held
                total[1] += waiting
        for template, (held, waiting) in sorted(totals.items()):
            running.add_metric([template], held)
            queue.add_metric([template], waiting)
        return [running, queue]


REGISTRY.register(_Gauges())


def admission_for(user) -> AdmissionControl:
    """The hub's :class:`AdmissionControl`: one per hub ``users`` dict (``user.settings``).

    A user outside a hub (no ``settings``) gets one that sees only that user's spawners.
    """
    users = (getattr(user, "settings", None) or {}).get("users")
    owner = users if users is not None else user
    found = _CONTROLS.get(id(owner))
    if found is None or found[0] is not owner:
        users = users if users is not None else {user.name: user}
        found = _CONTROLS[id(owner)] = (owner, AdmissionControl(lambda: _active_spawners(users)))
    return found[1]
