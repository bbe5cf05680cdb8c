"""Spawn time through MultipleSpawner vs the same child spawner configured directly.

Two hubs run side by side: one with ``LocalProcessSpawner`` as its spawner class, one with
``MultipleSpawner`` whose only template builds that same ``LocalProcessSpawner`` (same command:
the real ``jupyterhub-singleuser``, as the same Unix user). Spawns through the REST API alternate
between the hubs so drift in machine load hits both alike; the result is the ratio of medians.
"""

import json
import secrets
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import new_figure, save, summary
from tests.fixtures.hub import VENV_BIN, Hub, create_unix_user, remove_unix_user

CMD = [str(VENV_BIN / "jupyterhub-singleuser")]


def _catalogue(folder: Path) -> Path:
    path = folder / "catalogue.json"
    path.write_text(json.dumps({
        "deployments": {"local": [{"name": "hub-host", "provider": "local"}]},
        "templates": [{"name": "local", "resource_type": "local", "providers": ["local"],
                       "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner",
                                   "kwargs": {"cmd": CMD}}}],
    }))
    path.parent.chmod(0o755)
    return path


def _timed_spawn(hub: Hub, user: str, options=None) -> float:
    t0 = time.perf_counter()
    hub.spawn(user, user_options=options)
    elapsed = time.perf_counter() - t0
    hub.stop_server(user)
    return elapsed


def run(quick: bool) -> dict:
    n = 3 if quick else 12
    user = f"bench{secrets.token_hex(3)}"
    create_unix_user(user)
    folder = Path(tempfile.mkdtemp(prefix="ms-bench-"))
    direct_hub = Hub("c.JupyterHub.spawner_class = 'jupyterhub.spawner.LocalProcessSpawner'\n"
                     f"c.Spawner.cmd = {CMD!r}\n")
    multiple_hub = Hub("c.JupyterHub.spawner_class = 'multiple'\n"
                       f"c.MultipleSpawner.catalogue_paths = [{str(_catalogue(folder))!r}]\n")
    direct, multiple = [], []
    try:
        for hub in (direct_hub, multiple_hub):
            hub.start()
            hub.create_user(user)
        _timed_spawn(direct_hub, user)  # warm-up: imports, page cache
        _timed_spawn(multiple_hub, user, {"template": "local"})
        for _ in range(n):
            direct.append(_timed_spawn(direct_hub, user))
            multiple.append(_timed_spawn(multiple_hub, user, {"template": "local"}))
    finally:
        for hub in (direct_hub, multiple_hub):
            hub.remove()
        shutil.rmtree(folder, ignore_errors=True)
        remove_unix_user(user)
    return {
        "direct_spawn_s": summary(direct),
        "multiple_spawn_s": summary(multiple),
        "multiple_over_direct_ratio": statistics.median(multiple) / statistics.median(direct),
        "samples": {"direct_spawn_s": direct, "multiple_spawn_s": multiple},
    }


def plot(result: dict, path: Path) -> None:
    fig, (ax,) = new_figure(
        f"Spawn time: MultipleSpawner / LocalProcessSpawner = {result['multiple_over_direct_ratio']:.2f} (median)"
    )
    samples = result["samples"]
    ax.boxplot([samples["direct_spawn_s"], samples["multiple_spawn_s"]])
    ax.set_xticks([1, 2], ["LocalProcessSpawner", "MultipleSpawner -> LocalProcessSpawner"])
    ax.set_ylabel("seconds from REST request to ready")
    save(fig, path)
