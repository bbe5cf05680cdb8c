"""The fleet CLI on a hub with many servers: ``list`` time, single stops vs one bulk stop.

One hub (tests/fixtures/fleet.py: MultipleSpawner, JupyterHub's mock single-user server, the
fleet service with ``stop_concurrency`` = N) with N running servers (N = 50; 10 with --quick):

- ``list``: wall time of ``multiplespawner-servers list`` (a new process each time: start,
  one request, the table) and of ``list --json``, ``REPEATS`` each;
- single stops: ``SINGLES`` servers stopped one at a time with ``stop --server U/ --yes``
  (process start, dry run, stop, wait until the hub says it is gone);
- bulk stop: every other server with one ``stop --all --yes``; then every server must be gone
  from the hub and every mock server process ended.

The result: the medians and the ratio of the bulk stop to the slowest single stop (target:
under 2), with the counts of servers, results and leftover processes.

Every stop is also accounted in CPU seconds: what the hub (its own work and the mock servers it
reaped, less what those servers had used before), the fleet service, the proxy and the CLI
used from the stop's start to its end. Divided by the machine's cores, the bulk's CPU seconds
are the shortest wall time its work could take on this machine however well it ran in parallel
(``bulk_cpu_floor_s``); over the slowest single stop that floor says whether the 2x target is
reachable here at all.
"""

import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import hub_sampler
from benchmarks.common import new_figure, process_cpu_seconds, save
from tests.fixtures.fleet import CLI, alive, hub_config, pid_of, write_catalogue
from tests.fixtures.hub import Hub

REPEATS = 5
SINGLES = 3


class StopCPU:
    """CPU seconds used by everything a stop involves, between :meth:`start` and :meth:`end`,
    by part: ``hub`` (its own), ``servers`` (the stopped servers: the hub reaps them, so its
    children's time grows by their whole life and what each had used at :meth:`start` is
    subtracted), ``fleet`` (the service), ``proxy`` and ``cli`` (this process's reaped
    children)."""

    def __init__(self, hub_pid: int, fleet_pid: int, proxy_pid: int, server_pids: list[int]):
        self.hub_pid, self.fleet_pid, self.proxy_pid, self.server_pids = hub_pid, fleet_pid, proxy_pid, server_pids

    def _parts(self) -> dict:
        own, reaped = process_cpu_seconds(self.hub_pid)
        cli = os.times()
        return {"hub": own, "servers": reaped, "fleet": process_cpu_seconds(self.fleet_pid)[0],
                "proxy": process_cpu_seconds(self.proxy_pid)[0], "cli": cli.children_user + cli.children_system}

    def start(self) -> None:
        self._before = self._parts()
        self._before["servers"] += sum(process_cpu_seconds(p)[0] for p in self.server_pids)

    def end(self) -> dict:
        """The CPU seconds of each part since :meth:`start`, and their ``total``."""
        if any(alive(p) for p in self.server_pids):
            raise RuntimeError("a stopped server's process is still running: its CPU time is not counted")
        parts = {k: round(v - self._before[k], 2) for k, v in self._parts().items()}
        return {**parts, "total": round(sum(parts.values()), 2)}


def _service_pid(parent: int, module: str) -> int:
    """The pid of ``parent``'s child process running ``python -m module``."""
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        if module in Path(f"/proc/{child}/cmdline").read_text():
            return int(child)
    raise RuntimeError(f"no child of {parent} runs {module}")


def _cli(env, *args) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    out = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{args}: {out.returncode}\n{out.stdout}\n{out.stderr}")
    return elapsed, out


#: the hub's own account of each stop: "User s007 server took 1.93 seconds to stop"
_STOP_TOOK = re.compile(r"User (\S+) server took ([0-9.]+) seconds to stop")
_WAL = ("\nfrom multiplespawner.hub_database import sqlite_wal_db_kwargs\n"
        "c.JupyterHub.db_kwargs = sqlite_wal_db_kwargs()\n")


def run(quick: bool = False, hub_sqlite: str = "default", profile_hub: bool = False) -> dict:
    """``hub_sqlite``: ``wal`` for multiplespawner.hub_database's write-ahead log, ``default``
    for SQLite's defaults (the hub's own). ``profile_hub``: sample the hub's event-loop thread
    during the bulk stop (benchmarks/hub_sampler.py) and add its summary as ``hub_profile``."""
    n = 10 if quick else 50
    folder = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    folder.chmod(0o755)
    flag, stacks = folder / "sampling", folder / "hub-stacks.txt"
    config = hub_config(write_catalogue(folder), stop_concurrency=n) + (_WAL if hub_sqlite == "wal" else "")
    if profile_hub:
        config += hub_sampler.hub_config(str(Path(__file__).resolve().parent.parent), flag, stacks)
    profile = None
    hub = Hub(config)
    try:
        hub.start()
        hub.create_user("boss")
        users = [f"s{i:03d}" for i in range(n)]
        for u in users:
            hub.create_user(u, groups=["course-a"])
        t0 = time.perf_counter()
        with ThreadPoolExecutor(10) as pool:
            list(pool.map(lambda u: hub.spawn(u, "", {"template": "course-a-lab"}, timeout=600), users))
        spawn_all = time.perf_counter() - t0
        pids = [pid_of(hub, u) for u in users]
        token = hub.api("POST", "/users/boss/tokens", json={"note": "bench"}).json()["token"]
        env = {**os.environ, "JUPYTERHUB_API_TOKEN": token,
               "MULTIPLESPAWNER_FLEET_URL": f"{hub.url}/services/fleet/"}
        _cli(env, "list")  # warm-up: the service's first catalogue load and token check
        lists, jsons = [], []
        for _ in range(REPEATS):
            elapsed, out = _cli(env, "list")
            assert f"{n} servers" in out.stdout, out.stdout[-300:]
            lists.append(elapsed)
            jsons.append(_cli(env, "list", "--json")[0])
        help_times = [_cli(env, "--help")[0] for _ in range(REPEATS)]
        hub_pid = hub.process.proc.pid
        others = [_service_pid(hub_pid, "multiplespawner.fleet"), int((hub.dir / "proxy.pid").read_text())]
        singles, single_cpu = [], []
        for u, pid in zip(users[:SINGLES], pids):
            cpu = StopCPU(hub_pid, *others, [pid])
            cpu.start()
            singles.append(_cli(env, "stop", "--server", f"{u}/", "--yes")[0])
            single_cpu.append(cpu.end())
        log_before = len(hub.log_text())
        cpu = StopCPU(hub_pid, *others, pids[SINGLES:])
        if profile_hub:
            flag.touch()
        cpu.start()
        bulk, out = _cli(env, "stop", "--all", "--yes")
        bulk_cpu = cpu.end()
        if profile_hub:
            flag.unlink()
            deadline = time.monotonic() + 10
            while not stacks.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            profile = hub_sampler.summary(stacks)
        results = out.stdout.strip().splitlines()[-1]
        hub_stop_times = sorted(float(t) for _, t in _STOP_TOOK.findall(hub.log_text()[log_before:]))
        left = [u for u in users if hub.server_model(u) is not None]
        running = sum(alive(p) for p in pids)
    finally:
        hub.remove()
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "servers": n,
        "spawn_all_seconds": round(spawn_all, 1),
        "cli_help_median_s": round(statistics.median(help_times), 3),
        "list_median_s": round(statistics.median(lists), 3),
        "list_max_s": round(max(lists), 3),
        "list_json_median_s": round(statistics.median(jsons), 3),
        "single_stop_s": [round(s, 2) for s in singles],
        "bulk_stop_s": round(bulk, 2),
        "bulk_stopped": n - SINGLES,
        "bulk_over_slowest_single": round(bulk / max(singles), 2),
        "cores": os.cpu_count(),
        # CPU seconds by part (StopCPU) of each single stop and of the bulk
        "single_stop_cpu_s": single_cpu,
        "bulk_stop_cpu_s": bulk_cpu,
        # the shortest wall time the bulk's work could take here, all cores busy, and its ratio
        # to the slowest single stop: above 2, the 2x target cannot be met on this machine
        "bulk_cpu_floor_s": round(bulk_cpu["total"] / os.cpu_count(), 2),
        "bulk_cpu_floor_over_slowest_single": round(bulk_cpu["total"] / os.cpu_count() / max(singles), 2),
        "hub_sqlite": hub_sqlite,
        # each server's stop as the hub timed it (from its DELETE to its bookkeeping's end)
        "hub_stop_s_min_median_max": ([round(hub_stop_times[0], 2), round(statistics.median(hub_stop_times), 2),
                                       round(hub_stop_times[-1], 2)] if hub_stop_times else None),
        "bulk_result_line": results,
        "hub_profile": profile,
        "servers_left": len(left),
        "processes_left": running,
        "samples": {"list": lists, "list_json": jsons, "help": help_times},
    }


def plot(result: dict, path) -> None:
    fig, (ax,) = new_figure(f"multiplespawner-servers on {result['servers']} servers")
    labels = ["--help", "list", "list --json", "slowest single stop", f"bulk stop ({result['bulk_stopped']})",
              f"bulk's CPU s / {result['cores']} cores"]
    values = [result["cli_help_median_s"], result["list_median_s"], result["list_json_median_s"],
              max(result["single_stop_s"]), result["bulk_stop_s"], result["bulk_cpu_floor_s"]]
    ax.barh(labels, values)
    ax.axvline(2 * max(result["single_stop_s"]), linestyle="--", color="grey", label="2 x slowest single stop")
    ax.legend(loc="lower right")
    ax.set_xlabel("seconds (medians; stops: one run)")
    save(fig, path)
