"""``multiplespawner-servers``: list and stop a hub's servers in bulk, through the fleet service.

    multiplespawner-servers list [--json] [FILTERS]
    multiplespawner-servers stop [--dry-run] [--yes] [--concurrency N] (FILTERS | --all)
    multiplespawner-servers extend --minutes N [--dry-run] [--yes] (FILTERS | --all)
    multiplespawner-servers notify MESSAGE [--expires MINUTES] [--dry-run] [--yes] (FILTERS | --all)
    multiplespawner-servers audit [--limit N]
    multiplespawner-servers hosts
    multiplespawner-servers drain HOST [--stop [--yes]]
    multiplespawner-servers undrain HOST
    multiplespawner-servers machines [--json]
    multiplespawner-servers reap [--dry-run] [--yes]

FILTERS (each may be repeated; a server must match every kind given, any of its values):
--template, --provider, --group, --state running|pending|queued|stopping|failed, --older-than 2h,
--idle-for 30m, --host (pool host or machine, id or address), --server user[/name].

The service's URL comes from ``--url`` or ``$MULTIPLESPAWNER_FLEET_URL`` (e.g.
``https://hub.example.org/services/fleet/``), the token from ``$JUPYTERHUB_API_TOKEN`` (never
from the command line): the service decides with the token's JupyterHub scopes what it may
see and stop. ``stop`` shows the servers and asks before stopping them unless ``--yes``; it
then stops exactly those it showed (none started since) and prints one result per server.
``extend`` works the same way and adds ``--minutes`` to running servers' sessions, each within
its template's maximum session length (a server it would pass is ``refused`` with the reason);
``notify`` shows MESSAGE to those servers' users on their hub pages until it expires.
``drain HOST`` (a bare-metal pool host, ``address`` or ``address:port``) makes it take no new
servers, until ``undrain HOST``; with ``--stop`` its servers are stopped too (after a question
unless ``--yes``). ``hosts`` lists the drained hosts. ``machines`` lists the hub's provider
machines and the server owning each; ``reap`` has the hub destroy those no server owns (after
showing them and a question unless ``--yes``).

Exit status: 0 done, 1 refused or some server failed to stop (or was refused an extension),
2 usage or connection problem.
Start-up stays light: this module imports only the standard library.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone

STATES = ("running", "pending", "queued", "stopping", "failed")
_FILTERS = ("template", "provider", "group", "state", "older_than", "idle_for", "host", "server")


class Refused(Exception):
    """The service answered with an error; the message is its own."""


class Fleet:
    """The fleet service's REST API at ``url`` with ``token``."""

    def __init__(self, url: str, token: str, timeout: float = 600):
        self.url = url.rstrip("/") + "/api/"
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body=None):
        request = urllib.request.Request(
            self.url + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                message = json.loads(text).get("message") or text
            except (ValueError, AttributeError):
                message = text[:300]
            raise Refused(f"{e.code}: {message}") from None


def filters_of(args) -> dict:
    return {k: getattr(args, k) for k in _FILTERS if getattr(args, k)}


def _age(iso: str | None, now: datetime) -> str:
    if not iso:
        return "-"
    try:
        seconds = (now - datetime.fromisoformat(iso.replace("Z", "+00:00"))).total_seconds()
    except ValueError:
        return "?"
    return _span(seconds)


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def table(rows: list[dict], out) -> None:
    """Servers as aligned columns (``--json`` gives every field)."""
    now = datetime.now(timezone.utc)
    header = ("SERVER", "TEMPLATE", "PROVIDER", "TYPE", "STATE", "HOST", "STARTED", "IDLE", "LEFT")
    lines = [header]
    for r in rows:
        machine = r.get("machine") or {}
        lines.append((r["server"], r.get("template") or "-", r.get("provider") or "-", r.get("resource_type") or "-",
                      r["state"], machine.get("id") or machine.get("host") or "-", _age(r.get("started"), now),
                      _age(r.get("last_activity"), now), _span(r.get("lifetime_left_seconds"))))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip(), file=out)
    print(f"{len(rows)} server{'s' if len(rows) != 1 else ''}", file=out)


def run(args, fleet: Fleet, out, answer=input) -> int:
    if args.command == "list":
        query = urllib.parse.urlencode([(k, v) for k, values in filters_of(args).items() for v in values])
        rows = fleet.call("GET", "servers" + (f"?{query}" if query else ""))["servers"]
        if args.json:
            json.dump(rows, out, indent=2)
            print(file=out)
        else:
            table(rows, out)
        return 0
    if args.command == "hosts":
        for host, info in sorted(fleet.call("GET", "hosts")["drained"].items()):
            print(f"{host}  drained by {info.get('by')} at {info.get('time')}", file=out)
        return 0
    if args.command in ("drain", "undrain"):
        return drain(args, fleet, out, answer)
    if args.command == "machines":
        inventory = fleet.call("GET", "machines")
        if args.json:
            json.dump(inventory, out, indent=2)
            print(file=out)
            return 0
        for m in inventory["machines"]:
            owner = m["owner"] or ("no server: reap removes it" if m["orphan"] else f"{m['labelled_for']} (starting)")
            print(f"{m['provider']}  {m['id'][:12]}  {m['host']}:{m['port']}  {owner}", file=out)
        for problem in inventory["problems"]:
            print(f"problem: {problem}", file=out)
        print(f"{len(inventory['machines'])} machines of hub {inventory['hub_id']}", file=out)
        return 1 if inventory["problems"] else 0
    if args.command == "reap":
        return reap(args, fleet, out, answer)
    if args.command == "audit":
        for record in fleet.call("GET", f"audit?limit={args.limit}")["audit"]:
            print(json.dumps(record, sort_keys=True), file=out)
        return 0
    return bulk(args, fleet, out, answer)


#: per bulk verb: the request's own fields, the past participle, the question's verb
_BULK = {"stop": ((), "stopped", "Stop"), "extend": (("minutes",), "extended", "Extend"),
         "notify": (("message", "expires_minutes"), "notified", "Notify the users of")}


def bulk(args, fleet: Fleet, out, answer) -> int:
    """``stop`` or ``extend``: ask the service which servers the filters pick (a dry run),
    show them and ask unless ``--yes``, then act on exactly those (``only``)."""
    fields, done_word, verb = _BULK[args.command]
    request = {"filter": filters_of(args), "all": args.all, "concurrency": getattr(args, "concurrency", None),
               **{f: getattr(args, f) for f in fields}}
    if request["concurrency"] is None:
        del request["concurrency"]
    path = f"servers/{args.command}"
    shown = fleet.call("POST", path, {**request, "dry_run": True})["results"]
    acting = [r for r in shown if r["result"] != "refused"]
    if args.dry_run or not acting:
        for r in shown:
            print(f"{r['server']}: {r['result']}" + (f" ({r['reason']})" if r["reason"] else ""), file=out)
        print(f"{len(acting)} server{'s' if len(acting) != 1 else ''} would be {done_word}", file=out)
        return 1 if len(acting) < len(shown) else 0
    if not args.yes:
        for r in shown:
            print(f"  {r['server']}" + (f" ({r['result']}: {r['reason']})" if r["result"] == "refused" else ""),
                  file=out)
        if not _confirmed(answer, f"{verb} these {len(acting)} servers? [y/N] "):
            print(f"nothing {done_word}", file=out)
            return 1
    done = fleet.call("POST", path, {**request, "only": [r["server"] for r in shown]})
    for r in done["results"]:
        print(f"{r['server']}: {r['result']}" + (f" ({r['reason']})" if r["reason"] else ""), file=out)
    print(", ".join(f"{n} {result}" for result, n in sorted(done["counts"].items())) or f"nothing {done_word}",
          file=out)
    return 1 if done["counts"].get("failed") or done["counts"].get("refused") else 0


def drain(args, fleet: Fleet, out, answer) -> int:
    """``drain``/``undrain HOST``; ``--stop`` shows the host's servers and asks first."""
    stop = args.command == "drain" and args.stop
    if stop and not args.yes:
        on_host = fleet.call("GET", "servers?" + urllib.parse.urlencode({"host": args.host}))["servers"]
        for r in on_host:
            print(f"  {r['server']}", file=out)
        if on_host and not _confirmed(answer, f"Drain {args.host} and stop these {len(on_host)} servers? [y/N] "):
            print("nothing changed", file=out)
            return 1
    done = fleet.call("POST", f"hosts/{args.command}", {"host": args.host, "stop": stop})
    for r in done["results"]:
        print(f"{r['server']}: {r['result']}" + (f" ({r['reason']})" if r["reason"] else ""), file=out)
    state = "drained" if args.host in done["drained"] else "takes servers"
    print(f"{args.host}: {state}", file=out)
    return 1 if any(r["result"] == "failed" for r in done["results"]) else 0


def reap(args, fleet: Fleet, out, answer) -> int:
    """``reap``: name the machines no server owns (a dry run), ask unless ``--yes``, reap."""
    orphans = fleet.call("POST", "machines/reap", {"dry_run": True})
    for m in orphans["reaped"]:
        print(f"  {m['provider']} {m['id'][:12]} (labelled for {m['labelled_for']})", file=out)
    if args.dry_run or not orphans["reaped"]:
        print(f"{len(orphans['reaped'])} machines would be reaped", file=out)
        return 0
    if not args.yes and not _confirmed(answer, f"Destroy these {len(orphans['reaped'])} machines? [y/N] "):
        print("nothing reaped", file=out)
        return 1
    done = fleet.call("POST", "machines/reap", {"dry_run": False})
    for m in done["reaped"]:
        print(f"{m['provider']} {m['id'][:12]}: reaped", file=out)
    for problem in done["problems"]:
        print(f"problem: {problem}", file=out)
    print(f"{len(done['reaped'])} reaped", file=out)
    return 1 if done["problems"] else 0


def _confirmed(answer, question: str) -> bool:
    try:
        reply = answer(question)
    except EOFError:
        reply = ""
    return reply.strip().lower() in ("y", "yes")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="multiplespawner-servers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("MULTIPLESPAWNER_FLEET_URL"),
                   help="the fleet service, e.g. https://hub.example.org/services/fleet/ "
                        "(default: $MULTIPLESPAWNER_FLEET_URL)")
    sub = p.add_subparsers(dest="command", required=True)

    def with_filters(command):
        command.add_argument("--template", action="append", help="started from this template")
        command.add_argument("--provider", action="append", help="on this provider")
        command.add_argument("--group", action="append", help="of a member of this JupyterHub group")
        command.add_argument("--state", action="append", choices=STATES, help="in this state")
        command.add_argument("--older-than", dest="older_than", action="append", metavar="DURATION",
                             help="started longer ago than this (30m, 2h, 1d)")
        command.add_argument("--idle-for", dest="idle_for", action="append", metavar="DURATION",
                             help="no activity for this long (30m, 2h, 1d)")
        command.add_argument("--host", action="append", help="on this pool host or machine (id or address)")
        command.add_argument("--server", action="append", metavar="USER[/NAME]",
                             help="this user's servers, or one server (USER/ is the default one)")
        return command

    with_filters(sub.add_parser("list", help="list servers")).add_argument(
        "--json", action="store_true", help="every field, as JSON (docs/fleet.md has the schema)")
    stop = with_filters(sub.add_parser("stop", help="stop the servers the filters pick"))
    stop.add_argument("--all", action="store_true", help="every server you may manage (no filter needed)")
    stop.add_argument("--dry-run", action="store_true", help="show what would be stopped; stop nothing")
    stop.add_argument("--yes", action="store_true", help="do not ask before stopping")
    stop.add_argument("--concurrency", type=int, help="servers stopped at once (at most the service's limit)")
    extend = with_filters(sub.add_parser("extend", help="add session time to the running servers the filters pick"))
    extend.add_argument("--minutes", type=float, required=True,
                        help="minutes added to each session (within its template's maximum session length)")
    extend.add_argument("--all", action="store_true", help="every server you may manage (no filter needed)")
    extend.add_argument("--dry-run", action="store_true", help="show the new deadlines; change nothing")
    extend.add_argument("--yes", action="store_true", help="do not ask first")
    sub.add_parser("machines", help="the hub's provider machines and the server owning each").add_argument(
        "--json", action="store_true", help="every field, as JSON")
    reap_ = sub.add_parser("reap", help="destroy the provider machines no server owns (the hub's own reaper)")
    reap_.add_argument("--dry-run", action="store_true", help="show what would be destroyed; destroy nothing")
    reap_.add_argument("--yes", action="store_true", help="do not ask first")
    notify = with_filters(sub.add_parser("notify", help="show a message to the users of the servers the filters pick"))
    notify.add_argument("message", help='e.g. "The lab closes at 17:00: save your work"')
    notify.add_argument("--expires", dest="expires_minutes", type=float, default=24 * 60, metavar="MINUTES",
                        help="how long the users see it (default a day)")
    notify.add_argument("--all", action="store_true", help="the users of every server you may manage")
    notify.add_argument("--dry-run", action="store_true", help="show whom it would reach; notify nobody")
    notify.add_argument("--yes", action="store_true", help="do not ask first")
    sub.add_parser("hosts", help="list the drained pool hosts")
    drain_ = sub.add_parser("drain", help="a bare-metal pool host takes no new servers")
    drain_.add_argument("host", help="ADDRESS or ADDRESS:PORT of the pool host")
    drain_.add_argument("--stop", action="store_true", help="also stop the servers running on it")
    drain_.add_argument("--yes", action="store_true", help="do not ask before stopping")
    sub.add_parser("undrain", help="a drained pool host takes servers again").add_argument(
        "host", help="ADDRESS or ADDRESS:PORT, as drained")
    sub.add_parser("audit", help="the bulk actions recorded (yours, or everyone's for admins)").add_argument(
        "--limit", type=int, default=20, help="how many records, newest first (default 20)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command in _BULK and not args.all and not filters_of(args):
        print(f"error: give a filter, or --all to {args.command} every server you may manage", file=sys.stderr)
        return 2
    if not args.url:
        print("error: give --url or set MULTIPLESPAWNER_FLEET_URL to the fleet service", file=sys.stderr)
        return 2
    token = os.environ.get("JUPYTERHUB_API_TOKEN")
    if not token:
        print("error: set JUPYTERHUB_API_TOKEN to your JupyterHub API token", file=sys.stderr)
        return 2
    try:
        return run(args, Fleet(args.url, token), sys.stdout)
    except Refused as e:
        problem, status = str(e), 1
    except OSError as e:  # no connection (urllib's URLError is one)
        problem, status = str(e), 2
    except (ValueError, KeyError) as e:
        problem, status = f"unexpected answer from the service: {e!r}", 2
    print(f"error: {problem}", file=sys.stderr)
    return status

if __name__ == "__main__":
    sys.exit(main())
