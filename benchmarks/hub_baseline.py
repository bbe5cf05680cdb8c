"""Baseline: hub start-up to ready, and a LocalProcessSpawner spawn through the REST API.

Reference measured in the same run: the same Jupyter server started directly as the same
Unix user (no hub), time to its first HTTP answer. The ratio spawn/direct is what the hub's
spawn path adds; later benchmarks (MultipleSpawner, CloudSSHSpawner) compare against the
spawn figure measured here.
"""

import os
import secrets
import statistics
import subprocess
import sys
import time

import requests

from benchmarks.common import new_figure, save, summary
from tests.fixtures.hub import VENV_BIN, Hub, create_unix_user, remove_unix_user
from tests.fixtures.net import free_port


def _direct_start(user: str) -> float:
    """Seconds from exec to the first answer of jupyter-server started directly as ``user``."""
    port = free_port()
    env = {
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "HOME": f"/home/{user}",
        "JUPYTER_TOKEN": secrets.token_hex(16),
    }
    argv = ["sudo", "-u", user, "--preserve-env=PATH,HOME,JUPYTER_TOKEN", f"{VENV_BIN}/jupyter-lab",
            "--no-browser", "--ip=127.0.0.1", f"--port={port}"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd="/", stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/api", timeout=1).status_code == 200:
                    return time.perf_counter() - t0
            except requests.RequestException:
                pass
            if proc.poll() is not None:
                raise RuntimeError("jupyter-lab exited before answering")
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=20)


def run(quick: bool) -> dict:
    n = 3 if quick else 10
    user = f"bench{secrets.token_hex(3)}"
    create_unix_user(user)
    startup, spawn, direct = [], [], []
    hub = Hub()
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            hub.start()
            startup.append(time.perf_counter() - t0)
            hub.stop_process()
        hub.start()
        hub.create_user(user)
        for _ in range(n):  # alternate so drift in machine load hits both alike
            t0 = time.perf_counter()
            hub.spawn(user)
            spawn.append(time.perf_counter() - t0)
            hub.stop_server(user)
            direct.append(_direct_start(user))
    finally:
        hub.remove()
        remove_unix_user(user)
    return {
        "hub_startup_s": summary(startup),
        "local_spawn_s": summary(spawn),
        "direct_server_start_s": summary(direct),
        "spawn_over_direct_ratio": statistics.median(spawn) / statistics.median(direct),
        "samples": {"hub_startup_s": startup, "local_spawn_s": spawn, "direct_server_start_s": direct},
    }


def plot(result: dict, path) -> None:
    fig, (ax,) = new_figure("Hub baseline (seconds; box = samples)")
    samples = result["samples"]
    labels = ["hub start-up", "spawn via REST\n(LocalProcessSpawner)", "server started\ndirectly (reference)"]
    ax.boxplot([samples["hub_startup_s"], samples["local_spawn_s"], samples["direct_server_start_s"]])
    ax.set_xticks([1, 2, 3], labels)
    ax.set_ylabel("seconds")
    ax.set_title(f"spawn/direct median ratio {result['spawn_over_direct_ratio']:.2f}")
    save(fig, path)


if __name__ == "__main__":
    sys.exit("run me as: python -m benchmarks hub_baseline")
