"""Spawn time through MultipleSpawner vs the same child spawner configured directly.

Two hubs: one with ``LocalProcessSpawner`` as its spawner class, one with ``MultipleSpawner``
whose only template builds that same ``LocalProcessSpawner`` (same command: the real
``jupyterhub-singleuser``, as the same Unix user). Only one hub runs at a time, so neither
competes with the other for the two cores: the hubs take turns in blocks, in the order
direct, multiple, multiple, direct (repeated), so drift in machine load hits both alike and
neither always goes first. Each block starts its hub (keeping its database), makes one
untimed warm-up spawn, then ``PER_BLOCK`` timed spawns through the REST API (request to
ready; each server is stopped before the next), and stops the hub. The result is the ratio of
the medians, with a bootstrap interval.

Most of a spawn is the notebook server starting, whose jitter on a shared machine is seconds;
what MultipleSpawner itself adds happens before the child's ``start`` (catalogue check,
validation, building the child). The hub's log times that part exactly: from the hub's spawn
start (``took X seconds to start`` minus X) to ``Calling Spawner.start``, reported per hub as
``before_start_ms`` (every spawn, warm-ups included).
"""

import json
import random
import re
import secrets
import shutil
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from benchmarks.common import new_figure, percentile, save, summary
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


PER_BLOCK = 3
BOOTSTRAP_RESAMPLES = 2000
_CALLING = re.compile(r"^\[D (\S+ \S+) JupyterHub \S+\] Calling Spawner\.start for ")
_TOOK = re.compile(r"^\[I (\S+ \S+) JupyterHub \S+\] User \S+ took ([\d.]+) seconds to start")


def _before_start_ms(log: str) -> list:
    """Per spawn in a hub's log: milliseconds from the spawn's start to ``Spawner.start``."""
    def when(stamp):
        return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()

    out, calling = [], None
    for line in log.splitlines():
        if m := _CALLING.match(line):
            calling = when(m.group(1))
        elif (m := _TOOK.match(line)) and calling is not None:
            out.append(1000 * (calling - (when(m.group(1)) - float(m.group(2)))))
            calling = None
    return out


def _bootstrap_ratio_ci(direct: list, multiple: list) -> list:
    """95 % interval of the ratio of medians (percentile bootstrap, fixed seed): how much of
    the ratio is the machine's jitter."""
    rng = random.Random(0)
    ratios = sorted(
        statistics.median(rng.choices(multiple, k=len(multiple)))
        / statistics.median(rng.choices(direct, k=len(direct)))
        for _ in range(BOOTSTRAP_RESAMPLES)
    )
    return [percentile(ratios, 2.5), percentile(ratios, 97.5)]
BLOCK_ORDER = ("direct", "multiple", "multiple", "direct")


def run(quick: bool) -> dict:
    rounds = 1 if quick else 3  # 2 blocks of each hub per round
    per_block = 2 if quick else PER_BLOCK
    user = f"bench{secrets.token_hex(3)}"
    create_unix_user(user)
    folder = Path(tempfile.mkdtemp(prefix="ms-bench-"))
    hubs = {
        "direct": Hub("c.JupyterHub.spawner_class = 'jupyterhub.spawner.LocalProcessSpawner'\n"
                      f"c.Spawner.cmd = {CMD!r}\n"),
        "multiple": Hub("c.JupyterHub.spawner_class = 'multiple'\n"
                        f"c.MultipleSpawner.catalogue_paths = [{str(_catalogue(folder))!r}]\n"),
    }
    options = {"direct": None, "multiple": {"template": "local"}}
    samples = {"direct": [], "multiple": []}
    try:
        for _ in range(rounds):
            for kind in BLOCK_ORDER:
                hub = hubs[kind]
                hub.start()
                hub.create_user(user)
                _timed_spawn(hub, user, options[kind])  # warm-up after the hub start: not counted
                for _ in range(per_block):
                    samples[kind].append(_timed_spawn(hub, user, options[kind]))
                hub.stop_process()
        before_start = {kind: _before_start_ms(hub.log_text()) for kind, hub in hubs.items()}
    finally:
        for hub in hubs.values():
            hub.remove()
        shutil.rmtree(folder, ignore_errors=True)
        remove_unix_user(user)
    direct, multiple = samples["direct"], samples["multiple"]
    return {
        "direct_spawn_s": summary(direct),
        "multiple_spawn_s": summary(multiple),
        "multiple_over_direct_ratio": statistics.median(multiple) / statistics.median(direct),
        "ratio_95ci": _bootstrap_ratio_ci(direct, multiple),
        "before_start_ms": {kind: summary(values) for kind, values in before_start.items()},
        "schedule": {"hubs_running_at_once": 1, "block_order": list(BLOCK_ORDER) * rounds,
                     "timed_spawns_per_block": per_block, "warm_up_spawns_per_block": 1},
        "samples": {"direct_spawn_s": direct, "multiple_spawn_s": multiple},
    }


def plot(result: dict, path: Path) -> None:
    fig, (ax,) = new_figure(
        f"Spawn time: MultipleSpawner / LocalProcessSpawner = {result['multiple_over_direct_ratio']:.2f}"
        "\n(ratio of medians; 95% CI {:.2f}-{:.2f})".format(*result["ratio_95ci"])
    )
    samples = result["samples"]
    ax.boxplot([samples["direct_spawn_s"], samples["multiple_spawn_s"]])
    ax.set_xticks([1, 2], ["LocalProcessSpawner", "MultipleSpawner -> LocalProcessSpawner"])
    ax.set_ylabel("seconds from REST request to ready")
    save(fig, path)
