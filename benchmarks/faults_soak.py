"""Soak: simulated users spawn and stop servers while a random dependency fault hits every minute.

One real hub (configurable-http-proxy, ``ldap_hooks`` as pre-spawn hook against a real slapd,
MultipleSpawner with one local template: JupyterHub's mock single-user server started by
SimpleLocalProcessSpawner, so no Unix account per user) serves ``users`` simulated users. Each user loops: start
a server through the hub's REST API, wait until it is ready (or has failed), ask it something
through the proxy, keep it a few seconds, stop it, pause. Every ``fault_every`` seconds one fault
of :data:`FAULTS` is chosen at random and injected by the PID the benchmark started; hangs and
refusals last ``fault_for`` seconds. The first ``reference`` seconds run without faults: the
same run's reference for the success rate and the hub's event-loop stall.

Reported: spawns attempted / succeeded / failed with the right message (a failure whose
message names the dependency that was faulted while the spawn ran, or a hub that was not
running) / failed otherwise (with examples), leaks after the end (servers, single-user
processes, proxy routes, duplicate uids; target 0), and the hub's longest event-loop stall
(measured inside the hub by a 10 ms ticker: reference phase, fault phase, and apart from
them the first seconds of each hub process, whose start-up blocks its loop by design).

``--quick``: 4 users for about a minute, a fault every 15 s. ``--soak``: 20 users for 30
minutes, a fault every 60 s. Default: 20 users for 10 minutes.
"""

import contextlib
import json
import os
import random
import re
import signal
import sys
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import new_figure, save, summary  # noqa: E402
from tests.fixtures.faults import hung  # noqa: E402
from tests.fixtures.hub import Hub  # noqa: E402
from tests.fixtures.slapd import Slapd, ldap_hub_config, ldap_hub_env  # noqa: E402

SIMPLE = "jupyterhub.spawner.SimpleLocalProcessSpawner"

#: the hub's spawner: MultipleSpawner, its one template the mock server (the spawn the users
#: make names no template: the first usable one is taken)
SUITE_SPAWNER_CONFIG = """
import sys
from multiplespawner.catalogue import DEFAULT_SPAWNER_CLASSES
c.JupyterHub.spawner_class = "multiple"
c.MultipleSpawner.catalogue_paths = [{catalogue!r}]
c.MultipleSpawner.allowed_spawner_classes = [*DEFAULT_SPAWNER_CLASSES, {simple!r}]
"""


def write_catalogue(folder: Path) -> Path:
    """The soak's catalogue: one local template running the mock single-user server."""
    path = folder / "catalogue.json"
    path.write_text(json.dumps({
        "deployments": {"local": [{"name": "hub-host", "provider": "local"}]},
        "templates": [{"name": "mock", "resource_type": "local", "providers": ["local"],
                       "spawner": {"class": SIMPLE, "kwargs": {"cmd": [sys.executable, "-m", "jupyterhub.tests.mocksu"]}}}],
    }))
    return path

#: ``python -m benchmarks faults_soak --soak`` runs the long schedule
SUPPORTS_SOAK = True

SCHEDULES = {  # users, seconds, fault every, fault lasts, reference (no faults) first
    "quick": dict(users=4, duration=60, fault_every=15, fault_for=4, reference=10),
    "default": dict(users=20, duration=600, fault_every=60, fault_for=10, reference=60),
    "soak": dict(users=20, duration=1800, fault_every=60, fault_for=10, reference=120),
}

#: fault name -> the words a refused spawn's message must contain to be "the right message"
FAULTS = {
    "slapd-restart": "user directory (LDAP)",
    "slapd-hang": "user directory (LDAP)",
    "slapd-refuse": "user directory (LDAP)",
    "proxy-kill": "proxy",
    "proxy-hang": "proxy",
    "hub-kill": "hub not running",
}

#: Appended to the hub's config: a ticker on the hub's own event loop that writes, every
#: second, the worst lateness of a 10 ms sleep in that second (``time worst_ms`` lines).
STALL_TICKER = """
import asyncio as _asyncio, os as _os, time as _time

async def _stall_ticker(path):
    worst, second = 0.0, _time.time()
    with open(path, "a", buffering=1) as out:
        while True:
            before = _time.perf_counter()
            await _asyncio.sleep(0.01)
            worst = max(worst, (_time.perf_counter() - before - 0.01) * 1000)
            if _time.time() - second >= 1:
                out.write(f"{{_time.time():.3f}} {{worst:.1f}}\\n")
                worst, second = 0.0, _time.time()

_stall_task = _asyncio.get_running_loop().create_task(_stall_ticker({path!r} + f"-{{_os.getpid()}}"))
"""


class Injector:
    """Injects one fault at a time into the slapd, the proxy or the hub, by PID; records windows."""

    def __init__(self, hub: Hub, directory: Slapd, fault_for: float, rng: random.Random):
        self.hub, self.directory, self.fault_for, self.rng = hub, directory, fault_for, rng
        self.windows = []  # (name, start, end) in time.time()
        self.lock = threading.Lock()
        self.killed_hubs = []

    def _proxy_pid(self) -> int:
        return int((self.hub.dir / "proxy.pid").read_text())

    def inject(self, name: str) -> None:
        start = time.time()
        with self.lock:
            self.windows.append([name, start, None])
        try:
            getattr(self, name.replace("-", "_"))()
        finally:
            with self.lock:
                self.windows[-1][2] = time.time()

    def slapd_restart(self):
        self.directory.stop()
        self.directory.start()

    def slapd_hang(self):
        with hung(self.directory):
            time.sleep(self.fault_for)

    def slapd_refuse(self):
        self.directory.stop()
        time.sleep(self.fault_for)
        self.directory.start()

    def proxy_kill(self):
        old = self._proxy_pid()
        os.kill(old, signal.SIGTERM)
        deadline = time.monotonic() + 60  # the hub starts a new one within its check interval
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if self._proxy_pid() != old and _answers(self.hub.url + "/hub/api/"):
                    return
            time.sleep(0.2)
        raise RuntimeError("the hub did not start a new proxy within 60 s")

    def proxy_hang(self):
        pid = self._proxy_pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(self.fault_for)
        finally:
            os.kill(pid, signal.SIGCONT)

    def hub_kill(self):
        killed = self.hub.process
        os.kill(killed.pid, signal.SIGKILL)
        killed.proc.wait(timeout=10)
        self.killed_hubs.append(killed)
        self.hub.start(timeout=120)

    def active(self, start: float, end: float) -> list[str]:
        """Faults whose window overlaps [start, end] (a window still open counts as now)."""
        with self.lock:
            return [n for n, s, e in self.windows if s <= end and (e or time.time()) >= start]


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


class User(threading.Thread):
    """One simulated user: spawn, use, stop, pause, until ``end``; records every attempt."""

    def __init__(self, name, hub, injector, end, rng):
        super().__init__(name=name, daemon=True)
        self.user, self.hub, self.injector, self.end, self.rng = name, hub, injector, end, rng
        self.attempts = []

    def api(self, method, path, **kwargs):
        """The hub's REST API directly (not through the proxy, which a fault may freeze)."""
        kwargs.setdefault("timeout", 30)
        url = f"http://127.0.0.1:{self.hub.hub_port}/hub/api{path}"
        return requests.request(method, url, headers={"Authorization": f"token {self.hub.token}"}, **kwargs)

    def model(self):
        r = self.api("GET", f"/users/{self.user}")
        r.raise_for_status()
        return r.json().get("servers", {}).get("")

    def run(self):
        while time.time() < self.end:
            self.attempts.append(self.attempt())
            time.sleep(self.rng.uniform(1, 5))
        self.stop_server()

    def attempt(self) -> dict:
        started = time.time()
        outcome, message = "failed", ""
        try:
            r = self.api("POST", f"/users/{self.user}/server", json={})
            if r.status_code in (201, 202):
                outcome, message = self.wait_ready(deadline=time.monotonic() + 120)
            elif r.status_code == 400 and "already" in r.text:
                outcome, message = "skipped", "server still running from before"  # a lost stop
            else:
                message = f"{r.status_code}: {_message(r)}"
        except requests.RequestException as e:
            message = f"{type(e).__name__}: {e}"
        ended = time.time()
        if outcome == "ready":
            used = self.use()
            if used:
                message = used
            time.sleep(self.rng.uniform(3, 12))
        stopped = self.stop_server()
        return {"start": started, "end": ended, "outcome": outcome, "message": message[:300],
                "seconds": ended - started, "faults": self.injector.active(started, ended),
                "stop": stopped}

    def wait_ready(self, deadline):
        last = ""
        while time.monotonic() < deadline:
            try:
                model = self.model()
            except requests.RequestException as e:
                time.sleep(0.5)
                last = f"{type(e).__name__}: {e}"
                continue
            if model and model.get("ready"):
                return "ready", ""
            if model is None or not model.get("pending"):
                return "failed", "spawn failed after it was accepted: " + self.failure_message()
            time.sleep(0.25)
        return "failed", "not ready after 120 s" + (f" ({last})" if last else "")

    def failure_message(self) -> str:
        """The hub's log line for this user's failed spawn (the API keeps no message)."""
        pattern = re.compile(rf"Unhandled error starting {re.escape(self.user)}'s server: (.*)"
                             rf"|Failed to add {re.escape(self.user)}.* to proxy(.*)"
                             rf"|{re.escape(self.user)}.*(Timeout|timed out.*)")
        found = pattern.findall(self.hub.log_tail(400))
        return " ".join(filter(None, found[-1])) if found else "(no log line)"

    def use(self) -> str:
        """Ask the server something through the proxy; '' if it answered (or a fault explains)."""
        try:
            r = requests.get(f"{self.hub.url}/user/{self.user}/probe", timeout=15,
                             headers={"Authorization": f"token {self.hub.token}"})
            return "" if r.status_code == 200 else f"server answered {r.status_code} through the proxy"
        except requests.RequestException as e:
            return f"server unreachable through the proxy: {type(e).__name__}"

    def stop_server(self) -> str:
        """Stop this user's server (retrying through faults for up to 120 s); '' when stopped."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                model = self.model()
                if model is None:
                    return ""
                if not model.get("pending"):
                    self.api("DELETE", f"/users/{self.user}/server")
            except requests.RequestException:
                pass
            time.sleep(0.5)
        return "server not stopped after 120 s"


def _message(r) -> str:
    try:
        return r.json().get("message", r.text)
    except ValueError:
        return r.text


def classify(attempt: dict) -> str:
    """succeeded / failed_named (the message names a fault active meanwhile) / failed_other."""
    if attempt["outcome"] == "ready":
        return "succeeded"
    if attempt["outcome"] == "skipped":
        return "skipped"
    text = attempt["message"]
    for fault in attempt["faults"]:
        words = FAULTS[fault]
        if words in text:
            return "failed_named"
        if fault == "hub-kill" and ("ConnectionError" in text or "spawn failed after it was accepted" in text):
            return "failed_named"  # the hub was not running, or died under this spawn
    return "failed_other"


def leaks(hub: Hub, directory: Slapd) -> dict:
    """What is left after every user stopped: servers, mocksu processes, routes, uids."""
    active = [u["name"] for u in hub.api("GET", "/users", params={"state": "active"}).json()]
    routes = [r for r in hub.api("GET", "/proxy").json() if r != "/"]
    processes = leaks_of(hub)
    uids = [e["uidNumber"] for e in directory.entries("(objectClass=posixAccount)")]
    return {"servers": active, "singleuser_processes": processes, "proxy_routes": routes,
            "duplicate_uids": len(uids) - len(set(uids))}


#: seconds after each hub (re)start whose stalls are the hub's own start-up (loading config,
#: database, spawners: blocking by JupyterHub's design), reported apart
STARTUP = 10.0


def leaks_of(hub: Hub) -> list[int]:
    """PIDs of single-user servers started by ``hub`` (any of its processes) still running."""
    hub_api = f"127.0.0.1:{hub.hub_port}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"jupyterhub.tests.mocksu" in cmdline and hub_api in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(int(pid))
    return found


def stalls(hub: Hub, start: float, reference_end: float) -> dict:
    """The hub's worst event-loop stall (ms): in the reference phase, in the fault phase, and in
    the first :data:`STARTUP` seconds of each hub process (one ticker file per hub PID)."""
    seconds, startup = [], []
    for path in hub.dir.glob("stall-*"):
        lines = [tuple(map(float, line.split())) for line in path.read_text().splitlines()]
        first = lines[0][0] if lines else 0.0
        for t, worst in lines:
            (startup if t - first < STARTUP else seconds).append((t - start, worst))
    seconds.sort()
    ref = [w for t, w in seconds if t < reference_end - start]
    faulted = [w for t, w in seconds if t >= reference_end - start]
    return {"reference_max_ms": max(ref, default=0.0), "faults_max_ms": max(faulted, default=0.0),
            "startup_max_ms": max((w for _, w in startup), default=0.0),
            "timeline": [[round(t, 1), w] for t, w in sorted(seconds + startup)]}


def run(quick: bool, soak: bool = False) -> dict:
    schedule = SCHEDULES["quick" if quick else "soak" if soak else "default"]
    rng = random.Random(14)
    directory = Slapd().start()
    hub = Hub(ldap_hub_config(operation_timeout=2.0, connect_timeout=2.0))
    catalogue = write_catalogue(hub.dir)
    hub.env.update(ldap_hub_env(directory))
    with open(hub.config_path, "a") as config:
        config.write(SUITE_SPAWNER_CONFIG.format(catalogue=str(catalogue), simple=SIMPLE))
        config.write(STALL_TICKER.format(path=str(hub.dir / "stall")))
    injector = Injector(hub, directory, schedule["fault_for"], rng)
    try:
        hub.start(timeout=120)
        names = [f"soak{i:02d}" for i in range(schedule["users"])]
        for name in names:
            hub.create_user(name)
        start = time.time()
        end = start + schedule["duration"]
        users = [User(n, hub, injector, end, random.Random(n)) for n in names]
        for user in users:
            user.start()
            time.sleep(0.2)
        reference_end = start + schedule["reference"]
        time.sleep(max(0.0, reference_end - time.time()))
        next_fault = time.time()
        while next_fault < end - schedule["fault_for"]:
            time.sleep(max(0.0, next_fault - time.time()))
            fault = rng.choice(sorted(FAULTS))
            print(f"[{time.time() - start:7.1f} s] {fault}", flush=True)
            injector.inject(fault)
            next_fault += schedule["fault_every"]
        for user in users:
            user.join(timeout=300)
        time.sleep(2)  # the last stops settle
        left = leaks(hub, directory)
        attempts = [a for u in users for a in u.attempts]
        for a in attempts:
            a["class"] = classify(a)
        counts = {k: sum(a["class"] == k for a in attempts)
                  for k in ("succeeded", "failed_named", "failed_other", "skipped")}
        in_reference = [a for a in attempts if a["end"] < reference_end]
        result = {
            "schedule": schedule,
            "faults_injected": [{"fault": n, "at_s": round(s - start, 1), "lasted_s": round(e - s, 2)}
                                for n, s, e in injector.windows],
            "spawns_attempted": len(attempts),
            **{f"spawns_{k}": v for k, v in counts.items()},
            "reference_spawns": {"attempted": len(in_reference),
                                 "succeeded": sum(a["class"] == "succeeded" for a in in_reference)},
            "spawn_seconds_succeeded": summary([a["seconds"] for a in attempts if a["class"] == "succeeded"] or [0]),
            "failed_other_examples": [{k: a[k] for k in ("message", "faults", "seconds")}
                                      for a in attempts if a["class"] == "failed_other"][:10],
            "failed_named_examples": sorted({a["message"][:120] for a in attempts if a["class"] == "failed_named"})[:10],
            "unreachable_after_ready": [a["message"] for a in attempts if a["outcome"] == "ready" and a["message"]][:10],
            "stops_not_done": sum(bool(a["stop"]) for a in attempts),
            "leaks": left,
            "leak_count": sum(len(v) if isinstance(v, list) else v for v in left.values()),
            "hub_stall_ms": stalls(hub, start, reference_end),
        }
        result["samples"] = {"attempts": attempts, "stall_timeline": result["hub_stall_ms"].pop("timeline")}
        result["hub_longest_stall_ms"] = max(result["hub_stall_ms"]["faults_max_ms"],
                                             result["hub_stall_ms"]["reference_max_ms"])
        result["started_at"] = start
        return result
    finally:
        hub.remove()
        for killed in injector.killed_hubs:
            killed.stop()
        directory.cleanup()
        for pid in leaks_of(hub):  # counted above; a benchmark leaves nothing running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def plot(result: dict, path: Path) -> None:
    fig, (ax1, ax2) = new_figure(
        f"Soak: {result['spawns_attempted']} spawns, {result['spawns_succeeded']} ok, "
        f"{result['spawns_failed_named']} failed naming the fault, {result['spawns_failed_other']} otherwise; "
        f"{result['leak_count']} leaks", ncols=2)
    colours = {"succeeded": "tab:green", "failed_named": "tab:orange", "failed_other": "tab:red", "skipped": "tab:grey"}
    t0 = result["started_at"]
    for cls, colour in colours.items():
        pts = [(a["start"] - t0, a["seconds"]) for a in result["samples"]["attempts"] if a["class"] == cls]
        if pts:
            ax1.scatter(*zip(*pts), s=8, color=colour, label=cls)
    for fault in result["faults_injected"]:
        ax1.axvspan(fault["at_s"], fault["at_s"] + max(fault["lasted_s"], 1), color="grey", alpha=0.2)
    ax1.set_xlabel("seconds into the run (grey: a fault)")
    ax1.set_ylabel("seconds from spawn request to ready/failed")
    ax1.legend(fontsize="small")
    timeline = result["samples"]["stall_timeline"]
    if timeline:
        ax2.plot(*zip(*timeline), linewidth=0.7)
    ax2.set_xlabel("seconds into the run")
    ax2.set_ylabel("hub event loop: worst lateness per second (ms)")
    ax2.set_yscale("symlog", linthresh=10)
    save(fig, path)
