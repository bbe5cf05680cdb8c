"""Servers as the fleet service shows them, and the filters that pick some of them.

Pure functions over what the hub's REST API returns (``GET /hub/api/users?state=active`` with
``admin:server_state``): no I/O, no JupyterHub import, so the rules are tested without a hub.

A server row (the items of ``list --json``; docs/fleet.md has the schema) is built from the
hub's user and server models and MultipleSpawner's state (``state["multiple"]``: template,
catalogue version, options, deadline; ``state["machine"]``: the machine or pool host). Only
the fields named here leave the service: spawner state also holds child state and credential
records, which are never passed on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from ..extensions import extended_deadline

#: the values of a row's ``state`` (and of the ``state`` filter)
STATES = ("running", "pending", "queued", "stopping", "failed")

#: the filter keys the REST API and the CLI accept; each may be given several times (OR)
FILTER_KEYS = ("template", "provider", "group", "state", "older_than", "idle_for", "host", "server")

_DURATION = re.compile(r"^\s*(\d{1,7}(?:\.\d{1,3})?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 60, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_VALUES = 50  # values per filter key
_MAX_TEXT = 200  # characters per value


class FilterError(ValueError):
    """A filter the service cannot use; the message says what is wrong (a 400)."""


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``1.5d`` or a bare number of minutes -> seconds."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if not match:
        raise FilterError(f"{_quoted(text)} is not a duration: write a number with s, m, h or d "
                          "(minutes if no unit), e.g. 30m or 2h")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _quoted(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class ServerFilter:
    """Which servers a request means: each given key must match (AND), any of its values (OR).

    ``older_than``/``idle_for`` are seconds (the smallest value given counts); ``server``
    names ``user`` (all their servers), ``user/`` (their default server) or ``user/name``.
    """

    template: frozenset = frozenset()
    provider: frozenset = frozenset()
    group: frozenset = frozenset()
    state: frozenset = frozenset()
    older_than: float | None = None
    idle_for: float | None = None
    host: frozenset = frozenset()
    server: frozenset = frozenset()
    given: dict = field(default_factory=dict, compare=False)  # as the caller wrote it, for the audit

    @property
    def empty(self) -> bool:
        return not self.given

    def matches(self, row: dict, now: datetime) -> bool:
        """Does the server ``row`` (see :func:`server_rows`) pass every given filter?"""
        if self.template and row["template"] not in self.template:
            return False
        if self.provider and row["provider"] not in self.provider:
            return False
        if self.group and not self.group & set(row["groups"]):
            return False
        if self.state and row["state"] not in self.state:
            return False
        if self.server and row["server"] not in self.server and row["user"] not in self.server:
            return False
        if self.host:
            machine = row["machine"] or {}
            if not self.host & {machine.get("id"), machine.get("host")} - {None, ""}:
                return False
        if self.older_than is not None and not _before(row["started"], now, self.older_than):
            return False
        if self.idle_for is not None and not _before(row["last_activity"], now, self.idle_for):
            return False
        return True


def _before(iso: str | None, now: datetime, seconds: float) -> bool:
    moment = parse_time(iso)
    return moment is not None and moment <= now - timedelta(seconds=seconds)


def parse_time(iso: str | None) -> datetime | None:
    """The hub's ISO 8601 timestamps (``...Z``) as aware datetimes; None for none."""
    if not iso:
        return None
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def parse_filter(values: dict) -> ServerFilter:
    """A :class:`ServerFilter` from ``{key: [text, ...]}`` (query arguments, or a JSON body's
    strings and lists of strings). Raises :class:`FilterError` naming the first problem: an
    unknown key, a value that is not text, too many or too long values, an unknown state, a
    malformed duration."""
    if not isinstance(values, dict):
        raise FilterError("the filter must be an object of keys to values")
    given = {}
    for key, raw in values.items():
        if key not in FILTER_KEYS:
            raise FilterError(f"unknown filter {_quoted(key)}; the filters are {', '.join(FILTER_KEYS)}")
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            continue
        if len(items) > _MAX_VALUES:
            raise FilterError(f"{key}: at most {_MAX_VALUES} values")
        for item in items:
            if not isinstance(item, str) or not item.strip():
                raise FilterError(f"{key}: every value must be a non-empty string, not {_quoted(item)}")
            if len(item) > _MAX_TEXT:
                raise FilterError(f"{key}: values are at most {_MAX_TEXT} characters")
        given[key] = [i.strip() for i in items]
    unknown_states = sorted(set(given.get("state", [])) - set(STATES))
    if unknown_states:
        raise FilterError(f"state: {', '.join(map(_quoted, unknown_states))} is not one of {', '.join(STATES)}")
    durations = {k: min(parse_duration(v) for v in given[k]) for k in ("older_than", "idle_for") if k in given}
    return ServerFilter(
        template=frozenset(given.get("template", [])),
        provider=frozenset(given.get("provider", [])),
        group=frozenset(given.get("group", [])),
        state=frozenset(given.get("state", [])),
        older_than=durations.get("older_than"),
        idle_for=durations.get("idle_for"),
        host=frozenset(given.get("host", [])),
        server=frozenset(given.get("server", [])),
        given=given,
    )


def server_state(server: dict, record: dict) -> str:
    """``running``, ``pending`` (a spawn under way), ``queued`` (a spawn waiting in its
    template's line: MultipleSpawner's record says so), ``stopping`` or ``failed`` (a stopped
    server, listed only if its last start failed), from the hub's server model and the
    spawner's record."""
    if server.get("stopped"):
        return "failed"
    if server.get("pending") == "stop":
        return "stopping"
    if server.get("pending") or not server.get("ready"):
        return "queued" if server.get("pending") == "spawn" and record.get("queued") else "pending"
    return "running"


def _machine(state: dict) -> dict | None:
    lease = state.get("machine")
    if not isinstance(lease, dict) or not isinstance(lease.get("machine"), dict):
        return None
    machine = lease["machine"]
    return {
        "kind": lease.get("kind"),  # "pool" (a bare-metal pool host) or "provider"
        "deployment": lease.get("deployment"),
        "provider": machine.get("provider"),
        "id": machine.get("id"),
        "host": machine.get("host"),
        "port": machine.get("port"),
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def _unix(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def session_deadlines(users: list[dict]) -> dict[str, float]:
    """``user/name`` -> the deadline its spawner state records (Unix time, as stored: the
    session's id in the extension file), for the servers that have one."""
    sessions = {}
    for user in users:
        for name, server in (user.get("servers") or {}).items():
            state = server.get("state") if isinstance(server.get("state"), dict) else {}
            record = state.get("multiple") if isinstance(state.get("multiple"), dict) else {}
            if _unix(record.get("deadline")) is not None:
                sessions[f"{user['name']}/{name}"] = record["deadline"]
    return sessions


def server_rows(users: list[dict], templates: dict, now: datetime, extensions: dict | None = None) -> list[dict]:
    """One row per server of ``users`` (hub user models with ``servers`` and their ``state``).

    ``templates`` maps a template name to ``{"resource_type", "tags", "max_lifetime_minutes"}``
    from the catalogue in force (a template since removed from it keeps its name, with no
    tags). ``extensions`` is the extension file's content (:mod:`multiplespawner.extensions`):
    a row's ``deadline`` is its session's, extended. Rows are sorted by user and server name.
    """
    rows = []
    for user in users:
        for name, server in sorted((user.get("servers") or {}).items()):
            state = server.get("state") if isinstance(server.get("state"), dict) else {}
            failure = state.get("last_failure") if isinstance(state.get("last_failure"), dict) else None
            if server.get("stopped") and not failure:
                continue  # a stopped server (listed with include_stopped_servers) that did not fail
            record = state.get("multiple") if isinstance(state.get("multiple"), dict) else {}
            options = record.get("options") if isinstance(record.get("options"), dict) else {}
            if failure and not record:  # the hub cleared the state after the failure; the failure names both
                options = {"provider": failure.get("provider")}
            template = record.get("template") or (failure or {}).get("template")
            known = templates.get(template, {})
            source = record.get("machine_source") if isinstance(record.get("machine_source"), dict) else {}
            resource_type = known.get("resource_type") or (source.get("template_spec") or {}).get("resource_type")
            session = _unix(record.get("deadline"))
            deadline = extended_deadline(extensions or {}, f"{user['name']}/{name}", session) or session
            deadline_at = datetime.fromtimestamp(deadline, timezone.utc) if deadline else None
            most, minutes = known.get("max_lifetime_minutes"), _unix(record.get("lifetime_minutes"))
            latest = (datetime.fromtimestamp(session + 60 * (most - minutes), timezone.utc)
                      if session and most and minutes else None)
            rows.append({
                "server": f"{user['name']}/{name}",
                "user": user["name"],
                "name": name,
                "groups": sorted(user.get("groups") or []),
                "template": template,
                "tags": sorted(known.get("tags", [])),
                "catalogue_version": record.get("catalogue_version"),
                "provider": options.get("provider"),
                "resource_type": resource_type,
                "machine": _machine(state),
                "state": server_state(server, record),
                "queue_position": record.get("queued") if isinstance(record.get("queued"), str) else None,
                "pending": server.get("pending"),
                "started": server.get("started"),
                "last_activity": server.get("last_activity"),
                "deadline": _iso(deadline_at),
                "latest_deadline": _iso(latest),
                "failure": {"time": failure.get("time"), "message": failure.get("message")} if failure else None,
                "lifetime_left_seconds": max(0, round((deadline_at - now).total_seconds())) if deadline_at else None,
            })
    rows.sort(key=lambda r: (r["user"], r["name"]))
    return rows


def plan_extension(row: dict, minutes: float) -> tuple[float | None, str]:
    """``(new deadline as Unix time, "")`` for ``minutes`` more of ``row``'s session, or
    ``(None, why not)``: the server is not running, its template sets no session lifetime, or
    the new deadline would pass the template's maximum session length (``latest_deadline``)."""
    if row["state"] != "running":
        return None, f"it is {row['state']}, not running"
    deadline, latest = parse_time(row["deadline"]), parse_time(row["latest_deadline"])
    if deadline is None:
        return None, "its template sets no session lifetime: it runs until stopped"
    wanted = deadline + timedelta(minutes=minutes)
    if latest is None or wanted > latest + timedelta(seconds=1):
        room = max(0, int((latest - deadline).total_seconds() // 60)) if latest else 0
        return None, (f"{minutes:g} more minutes would end it at {_iso(wanted)[:19]}Z, after its template's "
                      f"maximum session length ({_iso(latest)[:19] + 'Z' if latest else 'none known'}); "
                      f"at most {room} more minutes")
    return wanted.timestamp(), ""
