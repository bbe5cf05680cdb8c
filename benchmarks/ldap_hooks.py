"""100 concurrent first spawns through setup_ldap_entry_hook against a real slapd.

Measures uid uniqueness, per-hook latency (p50/p95), wall time and the longest event-loop stall
while the spawns run. References measured in the same run, each on a fresh directory:

* ``direct_threads``: the same number of entries added with plain ldap3 in a 4-thread pool
  (uids handed out in advance, no counter, no lookups): the floor for the directory work;
* ``blocking``: the same find-or-create steps done with ldap3 directly on the event loop, as the
  published hook did: the stall it causes.
"""

import asyncio
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import ldap3  # noqa: E402
from ldap3.utils.conv import escape_filter_chars  # noqa: E402

from benchmarks.common import StallMonitor, new_figure, percentile, save, summary  # noqa: E402
from ldap_hooks import close_clients, setup_ldap_entry_hook  # noqa: E402
from tests.fixtures.slapd import Slapd, example_ldap_config, make_spawner  # noqa: E402


def hook_config(server: Slapd):
    """The MODI example configuration, naming entries uid=<username> (no certificate data)."""
    config = example_ldap_config(server, submit_spawner_attribute="", rdn_attributes=["uid"])
    config.LDAP.object_attributes = {**config.LDAP.object_attributes, "cn": "{uid}"}
    return config


async def hook_run(server: Slapd, n: int) -> dict:
    config = hook_config(server)
    spawners = [make_spawner(f"bench{i:03d}", config) for i in range(n)]
    latencies = []

    async def one(spawner):
        start = time.perf_counter()
        await setup_ldap_entry_hook(spawner)
        latencies.append((time.perf_counter() - start) * 1000)

    started = time.perf_counter()
    async with StallMonitor() as monitor:
        results = await asyncio.gather(*(one(s) for s in spawners), return_exceptions=True)
    wall = time.perf_counter() - started
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    uids = [s.environment.get("NB_UID") for s in spawners]
    entries = server.entries("(objectClass=posixAccount)", attributes=["uidNumber"])
    return {
        "spawns": n,
        "failures": len(failures),
        "failure_examples": failures[:3],
        "distinct_uids": len({u for u in uids if u}),
        "entries": len(entries),
        "distinct_entry_uids": len({e["uidNumber"] for e in entries}),
        "latency_ms": summary(latencies),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "wall_s": wall,
        "max_stall_ms": monitor.max_stall_ms,
        "samples": sorted(latencies),
    }


def direct_threads(server: Slapd, n: int) -> dict:
    """Add ``n`` entries with ldap3 in a 4-thread pool, uids assigned in advance."""
    base = f"ou=people,{server.suffix}"

    def add(i):
        start = time.perf_counter()
        conn = ldap3.Connection(ldap3.Server(server.url), server.root_dn, server.root_password, auto_bind=True)
        conn.add(f"uid=ref{i:03d},{base}", ["x-certsDistinguishedName", "posixAccount"],
                 {"cn": f"ref{i:03d}", "uid": f"ref{i:03d}", "uidNumber": 20000 + i,
                  "gidNumber": 100, "homeDirectory": f"/home/ref{i:03d}"})
        ok = conn.result["result"] == 0
        conn.unbind()
        return ok, (time.perf_counter() - start) * 1000

    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(add, range(n)))
    latencies = [ms for _, ms in results]
    return {"failures": sum(not ok for ok, _ in results), "wall_s": time.perf_counter() - started,
            "latency_ms": summary(latencies)}


async def blocking_on_loop(server: Slapd, n: int) -> dict:
    """The find-or-create steps with ldap3 called on the event loop (published style)."""
    base = f"ou=people,{server.suffix}"
    counter_dn = f"cn=uidNext,{server.suffix}"

    async def one(i):
        conn = ldap3.Connection(ldap3.Server(server.url), server.root_dn, server.root_password, auto_bind=True)
        name = f"blk{i:03d}"
        conn.search(base, f"(&(objectClass=posixAccount)(uid={escape_filter_chars(name)}))")
        while True:
            conn.search(counter_dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["uidNumber"])
            old = int(conn.response[0]["raw_attributes"]["uidNumber"][0])
            if conn.modify(counter_dn, {"uidNumber": [(ldap3.MODIFY_DELETE, [old]), (ldap3.MODIFY_ADD, [old + 1])]}):
                break
            await asyncio.sleep(0)
        conn.add(f"uid={name},{base}", ["x-certsDistinguishedName", "posixAccount"],
                 {"cn": name, "uid": name, "uidNumber": old + 1, "gidNumber": 100, "homeDirectory": f"/home/{name}"})
        conn.unbind()

    started = time.perf_counter()
    async with StallMonitor() as monitor:
        for i in range(n):
            await one(i)
            await asyncio.sleep(0.002)  # the loop gets back control between spawns, not within one
    return {"wall_s": time.perf_counter() - started, "max_stall_ms": monitor.max_stall_ms}


def _with_server(fn, *args):
    server = Slapd()
    try:
        server.start()
        return fn(server, *args)
    finally:
        server.cleanup()


def run(quick: bool) -> dict:
    n = 30 if quick else 100
    make_spawner("warm-up")  # the in-memory hub database is made once, outside the timings
    try:
        hook = _with_server(lambda s: asyncio.run(hook_run(s, n)))
    finally:
        close_clients()
    reference = _with_server(direct_threads, n)
    blocking = _with_server(lambda s: asyncio.run(blocking_on_loop(s, n)))
    return {
        "n": n,
        "hook": hook,
        "reference_direct_threads": reference,
        "reference_blocking_on_loop": blocking,
        "uids_unique": hook["distinct_uids"] == n and hook["distinct_entry_uids"] == n,
    }


def plot(result: dict, path: Path) -> None:
    fig, (ax1, ax2) = new_figure(f"ldap_hooks: {result['n']} concurrent first spawns", ncols=2)
    ax1.hist(result["hook"]["samples"], bins=20)
    ax1.axvline(result["hook"]["p50_ms"], color="k", linestyle="--", label="p50")
    ax1.axvline(result["hook"]["p95_ms"], color="r", linestyle="--", label="p95")
    ax1.set_xlabel("hook latency (ms)")
    ax1.set_ylabel("spawns")
    ax1.legend()
    labels = ["ldap_hooks\n(thread pool)", "ldap3 on the loop\n(published style)"]
    stalls = [result["hook"]["max_stall_ms"], result["reference_blocking_on_loop"]["max_stall_ms"]]
    ax2.bar(labels, stalls, color=["tab:green", "tab:red"])
    ax2.set_ylabel("longest event-loop stall (ms)")
    save(fig, path)
