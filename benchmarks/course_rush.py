"""A whole class presses *Start* at the same moment: the suite against plain JupyterHub.

N students (``--students``, default 100; ``--quick`` 20) log in through a real nginx that
authenticates them (basic auth standing in for the institution's login) and passes their
identity to the hub as headers with the shared secret (``examples/header-nginx``), then all
start a server through the REST API at once (their own cookie session and XSRF token, as a
browser does), follow the spawn's progress stream as the spawn-pending page does, and open
``/user/NAME/api/status`` through nginx and the hub's proxy (logging in to their server by
OAuth, as the browser does). Click -> ready is from the POST to the first answer of
``/api/status``. Half the students get a local process (JupyterHub's light mock single-user
server, as a Unix user of their own), half a container of the locally built notebook image
(DockerSpawner, the real ``jupyterhub-singleuser``).

Both nginxes pace the spawn requests as ``examples/header-nginx/hub-spawn-pacing.conf`` does
(``--spawn-pacing RATE`` per second, default 5; 0: not paced), so the two hubs differ only
behind their front proxy.

Two hubs, one after the other (never at once), each behind its own nginx with header login:

* ``plain``: JupyterHub with LocalProcessSpawner / DockerSpawner configured directly, by name
  (``PLAIN_SPAWNER``: the hub gets the plain spawner object itself); no LDAP.
* ``suite``: MultipleSpawner with a catalogue of the same two children as templates, ldap_hooks'
  ``setup_ldap_entry_hook`` against a real slapd as pre-spawn hook, and the children's lower CPU
  weight (its default: local notebooks at nice 19, containers at ``cpu_shares`` 128).

Measured per hub: time until the whole class is ready; click -> ready p50/p95/p99/max;
failures by reason; the hub's event-loop lag the whole time with a sampling profile of what
held the loop (benchmarks/hub_probe.py, inside the hub); the hub's RSS (before, peak, after,
growth per student); the hub REST API's latency probed every ~100 ms from a thread of its own
(``GET /hub/api/user`` with a token: authentication and a database read); the nice value and
autogroup of every local notebook and the ``CpuShares`` of every container (the CPU weight
really applied). The ratios suite/plain are what count. Everything the run made (servers,
containers, Unix users and their processes, nginx, slapd, hubs) is removed at the end, also
on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import aiohttp
import docker
import requests

from benchmarks.common import new_figure, percentile, save, summary
from benchmarks.hub_probe import hub_config as probe_config
from tests.fixtures.hub import Hub, create_unix_user, remove_unix_user
from tests.fixtures.net import loopback_host
from tests.fixtures.nginx import Nginx
from tests.fixtures.slapd import Slapd, ldap_hub_config, ldap_hub_env

REPO = Path(__file__).resolve().parents[1]
IDENTITY_SNIPPET = REPO / "examples" / "header-nginx" / "hub-identity.conf"
SECRET_PATHS_SNIPPET = REPO / "examples" / "header-nginx" / "hub-secret-paths.conf"
PACING_SNIPPET = REPO / "examples" / "header-nginx" / "hub-spawn-pacing.conf"
MOCK_CMD = [sys.executable, "-m", "jupyterhub.tests.mocksu"]
KINDS = ("plain", "suite")
READY_TIMEOUT = 900  # seconds from the click; a student not ready by then is a failure
PROBE_INTERVAL = 0.1

#: plain JupyterHub's spawner, by student name: the hub gets a LocalProcessSpawner or a
#: DockerSpawner object itself (``__new__`` returns it), configured by c.LocalProcessSpawner /
#: c.DockerSpawner, so nothing wraps the child.
PLAIN_SPAWNER = """
from dockerspawner import DockerSpawner
from jupyterhub.spawner import LocalProcessSpawner


class PlainByName(LocalProcessSpawner):
    def __new__(cls, *args, **kwargs):
        container = kwargs["user"].name.startswith({container_prefix!r})
        return (DockerSpawner if container else LocalProcessSpawner)(*args, **kwargs)


c.JupyterHub.spawner_class = PlainByName
c.LocalProcessSpawner.cmd = {mock_cmd!r}
c.DockerSpawner.image = {image!r}
c.DockerSpawner.remove = True
c.DockerSpawner.pull_policy = "never"
c.DockerSpawner.name_template = {name_template!r}
"""


def _common_config(gateway: str, nginx_host: str, n: int, hub_sqlite: str) -> str:
    """What both hubs share: header login behind nginx, the hub API where containers reach it,
    room for the whole class, patient timeouts, the loop probe, the same SQLite settings
    (``hub_sqlite``: ``wal`` for multiplespawner.hub_database's, ``default`` for SQLite's)."""
    wal = ("from multiplespawner.hub_database import sqlite_wal_db_kwargs\n"
           "c.JupyterHub.db_kwargs = sqlite_wal_db_kwargs()") if hub_sqlite == "wal" else ""
    return f"""
{wal}
c.JupyterHub.authenticator_class = "header"
c.HeaderAuthenticator.trusted_proxy_ips = [{nginx_host!r}]
c.HeaderAuthenticator.hub_proxy_ips = {_local_sources(gateway)!r}
c.HeaderAuthenticator.allowed_headers = {{"auth": "Remote-User"}}
c.JupyterHub.hub_ip = {gateway!r}
c.JupyterHub.hub_connect_ip = {gateway!r}
c.JupyterHub.log_level = "INFO"
c.JupyterHub.concurrent_spawn_limit = {max(100, n)}
c.Spawner.start_timeout = {READY_TIMEOUT}
c.Spawner.http_timeout = {READY_TIMEOUT}
{probe_config(str(REPO))}
"""


def _local_sources(gateway: str) -> list[str]:
    """The addresses CHP's connections to the hub on ``gateway`` may come from: every IPv4
    address of this host (the kernel picks the source; with the bridge down, not the gateway).
    All are this host, which the default (loopback) trusts already."""
    out = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    return sorted({gateway} | {a["local"] for link in json.loads(out) for a in link.get("addr_info", [])})


def _suite_config(catalogue: Path) -> str:
    return f"""
c.JupyterHub.spawner_class = "multiple"
c.MultipleSpawner.catalogue_paths = [{str(catalogue)!r}]
{ldap_hub_config()}
"""


def _catalogue(folder: Path, image: str, name_template: str) -> Path:
    path = folder / "catalogue.json"
    path.write_text(json.dumps({
        "deployments": {"local": [{"name": "hub-host", "provider": "local"}],
                        "container": [{"name": "engine", "provider": "docker", "image": image}]},
        "templates": [
            {"name": "local", "resource_type": "local", "providers": ["local"],
             "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner", "kwargs": {"cmd": MOCK_CMD}}},
            {"name": "container", "resource_type": "container", "providers": ["docker"],
             "spawner": {"class": "dockerspawner.DockerSpawner",
                         "kwargs": {"image": "{DEPLOYMENT_IMAGE}", "remove": True, "pull_policy": "never",
                                    "name_template": name_template}}},
        ],
    }))
    return path


# ---- one student -----------------------------------------------------------------------------


class Failed(Exception):
    """A student's run ended without a ready server; the message is the reason (no names)."""


async def _login(s: aiohttp.ClientSession, base: str) -> str:
    """Log in through nginx (header login); return the XSRF token the hub set."""
    async with s.get(f"{base}/hub/home") as r:
        if r.status != 200 or "/hub/home" not in str(r.url):
            raise Failed(f"login: HTTP {r.status} at {r.url.path}")
    for cookie in s.cookie_jar:
        if cookie.key == "_xsrf":
            return cookie.value
    raise Failed("login: no _xsrf cookie")


async def _follow_progress(s: aiohttp.ClientSession, url: str, headers: dict) -> None:
    """Read the spawn's event stream until it says ready; raise Failed if it says failed."""
    async with s.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=READY_TIMEOUT)) as r:
        if r.status != 200:
            raise Failed(f"progress stream: HTTP {r.status}")
        async for raw in r.content:
            line = raw.decode(errors="replace").strip()
            if not line.startswith("data:"):
                continue
            event = json.loads(line[len("data:"):])
            if event.get("failed"):
                raise Failed(f"spawn failed: {event.get('message', '')[:120]}")
            if event.get("ready"):
                return


async def _open_server(s: aiohttp.ClientSession, base: str, name: str, headers: dict, deadline: float) -> None:
    """GET /user/NAME/api/status until the server answers it (OAuth login to it on a 403)."""
    status_url = f"{base}/user/{name}/api/status"
    while time.monotonic() < deadline:
        async with s.get(status_url, headers=headers) as r:
            await r.read()
            if r.status == 200 and r.url.path == f"/user/{name}/api/status":
                return
            if r.status == 403 and r.url.path == f"/user/{name}/api/status":
                async with s.get(f"{base}/user/{name}/") as login:  # the OAuth round trip
                    await login.read()
                continue
        await asyncio.sleep(0.25)
    raise Failed("server did not answer /api/status in time")


async def student(name: str, template: str, options: dict | None, password: str, base: str,
                  everyone_in: asyncio.Barrier) -> dict:
    """One student's run: log in, wait for the whole class (``everyone_in``), click. Returns
    name, template, ``clicked_at`` and ``ready_at`` (monotonic), ``ready_s`` (click -> ready), or
    ``failure`` (the reason)."""
    record = {"name": name, "template": template}
    jar = aiohttp.CookieJar(unsafe=True)  # cookies from an IP-address host
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(cookie_jar=jar, auth=aiohttp.BasicAuth(name, password),
                                     timeout=timeout) as s:
        try:
            try:
                xsrf = await _login(s, base)
            finally:
                await everyone_in.wait()  # the class starts together, also without who failed
            headers = {"X-XSRFToken": xsrf}
            t0 = time.monotonic()
            record["clicked_at"] = t0
            async with s.post(f"{base}/hub/api/users/{name}/server", json=options or {}, headers=headers) as r:
                body = await r.text()
                if r.status not in (201, 202):
                    raise Failed(f"spawn request: HTTP {r.status}: {_message(body)}")
            if r.status == 202:
                await _follow_progress(s, f"{base}/hub/api/users/{name}/server/progress", headers)
            await _open_server(s, base, name, headers, t0 + READY_TIMEOUT)
            record["ready_at"] = time.monotonic()
            record["ready_s"] = record["ready_at"] - t0
        except Failed as e:
            record["failure"] = str(e)
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            record["failure"] = f"client: {type(e).__name__}"
    return record


def _message(body: str) -> str:
    try:
        return str(json.loads(body).get("message", ""))[:120]
    except (ValueError, AttributeError):
        return body[:120]


# ---- the hub, watched from outside -----------------------------------------------------------


class HubWatcher(threading.Thread):
    """Every ~100 ms: the REST API's latency (a sequential probe) and the hub's RSS."""

    def __init__(self, hub: Hub):
        super().__init__(name="hub-watcher", daemon=True)
        self.hub = hub
        self.started_at = time.monotonic()
        self.api: list[tuple[float, float]] = []  # (seconds since start, latency ms)
        self.api_errors: Counter = Counter()
        self.rss_mb: list[tuple[float, float]] = []
        self._stop_event = threading.Event()

    def run(self):
        s = requests.Session()
        s.headers["Authorization"] = f"token {self.hub.token}"
        while not self._stop_event.is_set():
            t = time.monotonic()
            try:
                r = s.get(f"{self.hub.api_url}/user", timeout=30)
                ok = r.status_code == 200
            except requests.RequestException as e:
                ok, r = False, e
            latency = (time.monotonic() - t) * 1000
            self.api.append((round(t - self.started_at, 3), round(latency, 1)))
            if not ok:
                self.api_errors[getattr(r, "status_code", type(r).__name__)] += 1
            self.rss_mb.append((round(t - self.started_at, 3), hub_rss_mb(self.hub)))
            self._stop_event.wait(max(0.0, PROBE_INTERVAL - (time.monotonic() - t)))

    def stop(self):
        self._stop_event.set()
        self.join(timeout=60)


def hub_rss_mb(hub: Hub) -> float:
    """Resident memory of the hub process (MiB)."""
    for line in Path(f"/proc/{hub.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _probe(hub_address: str, reset: bool = False) -> dict:
    """The hub's loop probe, asked on the hub's own port (not through its proxy)."""
    r = requests.get(f"http://{hub_address}/hub/loop-probe", params={"reset": "1"} if reset else {}, timeout=120)
    r.raise_for_status()
    return r.json()


def cpu_weights(hub: Hub, engine_client) -> dict:
    """What the children really run at: nice and autogroup of each local notebook process,
    ``CpuShares`` of each container (Docker reports 0 for its default, 1024)."""
    r = hub.api("GET", "/users", params={"state": "ready"})
    r.raise_for_status()
    nice, autogroup, shares = Counter(), Counter(), Counter()
    for user in r.json():
        state = user["servers"][""].get("state") or {}
        state = state.get("child_state", state)  # MultipleSpawner keeps the child's state inside
        if state.get("pid"):
            nice[int(Path(f"/proc/{state['pid']}/stat").read_text().rsplit(")", 1)[1].split()[16])] += 1
            autogroup[Path(f"/proc/{state['pid']}/autogroup").read_text().split()[-1]] += 1
        elif state.get("object_id") or state.get("container_id"):
            container = engine_client.api.inspect_container(state.get("object_id") or state["container_id"])
            shares[container["HostConfig"]["CpuShares"]] += 1
    return {"local_nice": dict(nice), "local_autogroup_nice": dict(autogroup), "container_cpu_shares": dict(shares)}


# ---- one rush on one hub -----------------------------------------------------------------------


async def _rush(base: str, roster: list[tuple[str, str, dict | None]], password: str) -> list[dict]:
    """Everyone logs in (a class is on the hub before the teacher says "start"), then clicks."""
    everyone_in = asyncio.Barrier(len(roster))
    return await asyncio.gather(*(student(name, template, options, password, base, everyone_in)
                                  for name, template, options in roster))


def _stop_all(hub: Hub, names: list[str], timeout: float = 300) -> None:
    """Ask the hub to stop every student's server at once; wait until it says all are gone."""
    for name in names:
        try:
            hub.api("DELETE", f"/users/{name}/server", timeout=60)
        except requests.RequestException:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = hub.api("GET", "/users", params={"state": "active"}, timeout=60)
            if r.ok and not r.json():
                return
        except requests.RequestException:
            pass
        time.sleep(1)


def pacing_directives(rate: int) -> tuple[str, str]:
    """nginx's http- and location-level directives of examples/header-nginx/hub-spawn-pacing.conf
    at ``rate`` spawn requests per second; none for 0."""
    if not rate:
        return "", ""
    snippet = PACING_SNIPPET.read_text()
    assert "rate=5r/s" in snippet
    return snippet.replace("rate=5r/s", f"rate={rate}r/s"), "limit_req zone=hub_spawns burst=10000;\n"


def one_hub(kind: str, config: str, env: dict, students, password: str, nginx_host: str, gateway: str,
            engine_client, cleanup, spawn_pacing: int = 0) -> dict:
    """Start the ``kind`` hub and its nginx (pacing spawn requests at ``spawn_pacing`` per
    second, 0: not), run the rush, collect the figures, stop it all."""
    hub = Hub(config, env={**env, "JUPYTERHUB_HEADER_AUTH_SECRET": cleanup.secret})
    pacing_http, pacing_location = pacing_directives(spawn_pacing)
    nginx = Nginx(hub.url, host=nginx_host, basic_auth={name: password for name, _, _ in students},
                  http_directives='map $remote_user $hub_user_data { default ""; }\n'
                                  'map $remote_user $hub_user_groups { default ""; }\n'
                                  + SECRET_PATHS_SNIPPET.read_text() + pacing_http,
                  server_directives=f'set $hub_proxy_secret "{cleanup.secret}";',
                  location_directives=IDENTITY_SNIPPET.read_text() + pacing_location,
                  worker_connections=max(256, 8 * len(students)))  # a stream and a request each, both ways
    cleanup.hubs.append(hub)
    cleanup.nginxes.append(nginx)
    hub.start(timeout=120)
    nginx.start()
    journal_mode = hub_journal_mode(hub)
    rss_before = hub_rss_mb(hub)
    hub_address = f"{gateway}:{hub.hub_port}"
    _probe(hub_address, reset=True)
    load_before = os.getloadavg()
    watcher = HubWatcher(hub)
    watcher.start()
    started = time.monotonic()
    try:
        records = asyncio.run(_rush(nginx.url, students, password))
    finally:
        watcher.stop()
    probe = _probe(hub_address)
    weights = cpu_weights(hub, engine_client)
    rss_after = hub_rss_mb(hub)
    _stop_all(hub, [name for name, _, _ in students])
    if any("failure" in r for r in records):  # the hub's side of it, before its log goes
        problems = [line for line in hub.log_text().splitlines() if line.startswith(("[W", "[E"))]
        print(f"--- {kind} hub: last warnings and errors ---", *problems[-40:], sep="\n", file=sys.stderr)
    hub.remove()
    nginx.cleanup()
    return {**_figures(kind, records, watcher, probe, weights, rss_before, rss_after, started, load_before),
            "hub_db_journal_mode": journal_mode}


def hub_journal_mode(hub: Hub) -> str:
    """The journal mode of the hub's SQLite file, read by a connection of our own (WAL is a
    property of the file, so this is what the hub's connections use)."""
    connection = sqlite3.connect(f"file:{hub.dir / 'jupyterhub.sqlite'}?mode=ro", uri=True)
    try:
        return connection.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        connection.close()


def _figures(kind, records, watcher, probe, weights, rss_before, rss_after, started, load_before) -> dict:
    ready = [r for r in records if "ready_s" in r]
    times = [r["ready_s"] for r in ready]
    clicks = [r["clicked_at"] for r in records if "clicked_at" in r]
    rush_api = [ms for t, ms in watcher.api if clicks and t + watcher.started_at >= min(clicks)]
    peak = max((mb for _, mb in watcher.rss_mb), default=rss_before)
    click0 = min(clicks) if clicks else started
    return {
        "students": len(records),
        "ready": len(ready),
        "failures": dict(Counter(r["failure"] for r in records if "failure" in r)),
        "class_ready_s": (max(r["ready_at"] for r in ready) - click0) if ready and len(ready) == len(records) else None,
        "click_to_ready_s": {**summary(times), "p50": percentile(times, 50), "p99": percentile(times, 99)} if times else None,
        "by_template_p95_s": {
            t: percentile([r["ready_s"] for r in ready if r["template"] == t], 95)
            for t in ("local", "container") if any(r["template"] == t for r in ready)
        },
        "hub_loop": {k: v for k, v in probe.items() if k != "stalls"},
        "hub_api_ms": {"p50": percentile(rush_api, 50), "p99": percentile(rush_api, 99), "worst": max(rush_api),
                       "probes": len(rush_api), "errors": dict(watcher.api_errors)} if rush_api else None,
        "hub_rss_mb": {"before": rss_before, "peak": peak, "after": rss_after,
                       "growth_per_student_kb": (rss_after - rss_before) * 1024 / max(1, len(records))},
        "cpu_weight_seen": weights,
        "load_average_before": load_before,
        "samples": {
            "ready_after_click_s": sorted(times),
            "api_probe": watcher.api,
            "api_probe_click_offset_s": click0 - watcher.started_at,
            "loop_stalls": probe.get("stalls", []),
        },
    }


# ---- set-up and clean-up -------------------------------------------------------------------------


class Cleanup:
    """Everything one run made, removed by :meth:`run` whatever happened (idempotent)."""

    def __init__(self, run_id: str, engine_client):
        self.run_id = run_id
        self.secret = secrets.token_hex(16)
        self.engine_client = engine_client
        self.hubs: list[Hub] = []
        self.nginxes: list[Nginx] = []
        self.unix_users: list[str] = []
        self.slapd: Slapd | None = None
        self.folder: Path | None = None

    def run(self) -> None:
        """Every step, each tried even if an earlier one failed (the first error is raised)."""
        steps = [hub.remove for hub in self.hubs] + [nginx.cleanup for nginx in self.nginxes]
        steps.append(self._remove_containers)
        steps += [lambda name=name: (stop_processes_of(name), remove_unix_user(name)) for name in self.unix_users]
        if self.slapd is not None:
            steps.append(self.slapd.cleanup)
        if self.folder is not None:
            steps.append(lambda: shutil.rmtree(self.folder, ignore_errors=True))
        errors = []
        for step in steps:
            try:
                step()
            except Exception as e:  # go on: everything else must still be removed
                errors.append(e)
        if errors:
            raise errors[0]

    def _remove_containers(self) -> None:
        for container in self.engine_client.containers.list(all=True, filters={"name": f"rush-{self.run_id}"},
                                                            ignore_removed=True):
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass  # DockerSpawner's remove=True got there first


def stop_processes_of(user: str) -> None:
    """Stop every process still running as Unix user ``user``, by PID (TERM, then KILL)."""
    import pwd

    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _owner(p) == uid]
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if not pids:
            return
        time.sleep(2)


def _owner(proc: Path) -> int | None:
    try:
        return proc.stat().st_uid
    except OSError:
        return None


def _terminate_on_sigterm() -> None:
    """SIGTERM ends the run like Ctrl-C: the ``finally`` clean-up runs."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run(quick: bool, students: int | None = None, hub_sqlite: str = "wal", spawn_pacing: int = 5) -> dict:
    from images.build import build_image
    from images.engine import DockerEngine

    n = students or (20 if quick else 100)
    run_id = secrets.token_hex(3)
    _terminate_on_sigterm()
    engine = DockerEngine().acquire()
    cleanup = Cleanup(run_id, engine.client)
    try:
        image = build_image("notebook", engine.client)
        gateway = engine.client.networks.get("bridge").attrs["IPAM"]["Config"][0]["Gateway"]
        cleanup.folder = Path(tempfile.mkdtemp(prefix="rush-"))
        cleanup.folder.chmod(0o755)
        name_template = f"rush-{run_id}-{{username}}"
        catalogue = _catalogue(cleanup.folder, image, name_template)
        # even students: local process (a Unix user each); odd: container
        names = [f"r{run_id}{'l' if i % 2 == 0 else 'c'}{i:03d}" for i in range(n)]
        for name in names[::2]:
            create_unix_user(name)
            cleanup.unix_users.append(name)
        password = secrets.token_urlsafe(12)
        cleanup.slapd = Slapd().start()
        nginx_host = loopback_host()
        common = _common_config(gateway, nginx_host, n, hub_sqlite)
        results = {}
        for kind in KINDS:
            templates = ["container" if i % 2 else "local" for i in range(n)]
            if kind == "plain":
                config = common + PLAIN_SPAWNER.format(container_prefix=f"r{run_id}c", mock_cmd=MOCK_CMD,
                                                       image=image, name_template=name_template)
                roster, env = [(name, t, None) for name, t in zip(names, templates)], {}
            else:
                config = common + _suite_config(catalogue)
                roster = [(name, t, {"template": t}) for name, t in zip(names, templates)]
                env = ldap_hub_env(cleanup.slapd)
            results[kind] = one_hub(kind, config, env, roster, password, nginx_host, gateway, engine.client, cleanup,
                                    spawn_pacing)
            # so far, in case a later hub does not finish
            print(json.dumps({kind: {k: v for k, v in results[kind].items() if k != "samples"}}), file=sys.stderr)
    finally:
        cleanup.run()
        engine.release()
    return {**_compare(n, results, hub_sqlite), "spawn_pacing_per_s": spawn_pacing}


def _compare(n: int, results: dict, hub_sqlite: str) -> dict:
    plain, suite = results["plain"], results["suite"]

    def ratio(a, b):
        return a / b if a and b else None

    return {
        "students": n,
        "hub_sqlite": hub_sqlite,
        "order": list(KINDS),
        "plain": plain,
        "suite": suite,
        "p95_suite_over_plain": ratio((suite["click_to_ready_s"] or {}).get("p95"),
                                      (plain["click_to_ready_s"] or {}).get("p95")),
        "class_ready_suite_over_plain": ratio(suite["class_ready_s"], plain["class_ready_s"]),
        "samples": {kind: results[kind].pop("samples") for kind in KINDS},
    }


def plot(result: dict, path: Path) -> None:
    fig, (ax1, ax2) = new_figure(f"Course rush: {result['students']} students start at once", ncols=2)
    for kind, label in (("plain", "plain JupyterHub"), ("suite", "suite (MultipleSpawner + LDAP + CPU weight)")):
        samples = result["samples"][kind]
        times = samples["ready_after_click_s"]
        ax1.step([0, *times], range(len(times) + 1), where="post", label=label)
        offset = samples["api_probe_click_offset_s"]
        probe = [(t - offset, ms) for t, ms in samples["api_probe"] if t >= offset]
        if probe:
            ax2.plot([t for t, _ in probe], [ms for _, ms in probe], label=label, linewidth=0.8)
    ax1.set_xlabel("seconds after the click")
    ax1.set_ylabel("students ready")
    ax1.legend()
    ax2.set_yscale("log")
    ax2.set_xlabel("seconds after the click")
    ax2.set_ylabel("hub REST API latency (ms)")
    ax2.axhline(250, color="grey", linestyle=":", linewidth=0.8)
    ax2.legend()
    save(fig, path)
