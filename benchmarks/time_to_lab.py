"""Time from "start" to a ready lab on a machine, split by phase, through a real hub.

One hub (MultipleSpawner, CHP) with two templates, spawned alternately through the REST API:

* ``container-machine`` (``virtual_machine`` on the ``docker`` provider, prepared ssh-machine image
  with the notebook environment baked in, AnsibleConfigurer with the shipped playbooks);
* ``pool-lab`` (``bare_metal``): the reference, the same jupyterhub-singleuser started by
  CloudSSHSpawner on an already prepared sshd host (127.0.0.N), so only the start phase remains.

Phases come from the spawn's progress messages, timestamped by the hub's log: create
(provider.create), wait (sshd answers with the pinned key), configure (Ansible), start
(CloudSSHSpawner connects and launches, and the hub waits for the notebook to answer). The
pool reference has only the start phase.

The configuration cache: after a container spawn, the same configure call is repeated from the
benchmark against the running machine, once with no previous hash (Ansible runs, changes
nothing) and once with the hash from the server's state (skipped). With ``--quick`` off, one
spawn on the plain ssh-machine image (the notebook environment installed from wheels by
Ansible) shows what the prepared image saves.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

from benchmarks.common import new_figure, save, summary
from tests.fixtures.hub import Hub, create_unix_user, remove_unix_user

PHASES = ("create", "wait", "configure", "start")
#: progress message prefix -> the phase it starts
MARKS = {
    "Creating a machine": "create",
    "Waiting for sshd": "wait",
    "Configuring the machine": "configure",
    "Starting CloudSSHSpawner": "start",
}


def _catalogue(image: str, sshd, key_path: Path, wheel_dir: str | None) -> dict:
    from tests.integration.test_machines_docker import machine_catalogue
    from tests.integration.test_multiple_bare_metal import pool_catalogue

    cat = machine_catalogue(image)
    if wheel_dir:  # the plain image: Ansible installs the environment from the hub's wheels
        options = cat["templates"][0]["configurer"]["options"]
        options["wheel_dir"] = wheel_dir
        options["variables"] = {}
    pool = pool_catalogue([(sshd, 10)], key_path)
    cat["deployments"].update(pool["deployments"])
    cat["templates"] += pool["templates"]
    return cat


_LOG_LINE = re.compile(r"^\[I (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) [^\]]*\] (\S+): (.*)$")


def _log_marks(log: str, user: str, since: float) -> dict:
    """Phase -> wall-clock time of the spawner's first progress message for it (from the hub log)."""
    marks = {}
    for line in log.splitlines():
        m = _LOG_LINE.match(line)
        if not m or m.group(2) != user:
            continue
        when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        if when < since:
            continue
        for prefix, phase in MARKS.items():
            if m.group(3).startswith(prefix):
                marks.setdefault(phase, when)
    return marks


def timed_spawn(hub: Hub, user: str, template: str, timeout: float = 1800) -> dict:
    """Spawn ``template`` for ``user``; return seconds per phase, total, and the server model.

    Phase boundaries are the hub's own log timestamps of the spawner's progress messages (the
    progress stream replays earlier events in a burst when it is opened, so client-side arrival
    times would not separate them); the last phase ends when the REST API reports the server
    ready. Hub and benchmark share the machine's clock.
    """
    since = time.time() - 0.5  # log timestamps have millisecond resolution
    t0 = time.perf_counter()
    r = hub.api("POST", f"/users/{user}/server", json={"template": template})
    if r.status_code not in (201, 202):
        raise RuntimeError(f"spawn refused: {r.status_code} {r.text}")
    model = hub.wait_for_ready(user, timeout=timeout)
    ready = time.time()
    total = time.perf_counter() - t0
    marks = _log_marks(hub.log_text(), user, since)
    present = sorted((when, phase) for phase, when in marks.items())
    phases = {}
    for i, (when, phase) in enumerate(present):
        end = present[i + 1][0] if i + 1 < len(present) else ready
        phases[phase] = end - when
    return {"phases": phases, "total": total, "model": model}


def configure_again(hub: Hub, user: str, lease: dict, options: dict) -> dict:
    """Re-run the template's configure step on the running machine, without and with the hash."""
    from multiplespawner.configurers import AnsibleConfigurer
    from multiplespawner.credentials import CredentialStore
    from multiplespawner.providers.base import Machine

    store = CredentialStore(base_dir=str(hub.dir / "server-credentials"))
    credentials = store.from_state(lease["credentials"])
    machine = Machine.from_state(lease["machine"])
    configurer = AnsibleConfigurer(**options)
    variables = {"notebook_user_name": lease["notebook_user"]}

    async def both():
        t0 = time.perf_counter()
        full = await configurer.configure(machine, credentials, variables)
        t1 = time.perf_counter()
        skipped = await configurer.configure(machine, credentials, variables, previous_hash=lease["config_hash"])
        t2 = time.perf_counter()
        return {
            "ansible_rerun_s": t1 - t0, "ansible_rerun_changed": full.changed,
            "hash_matches_spawn": full.config_hash == lease["config_hash"],
            "skipped_s": t2 - t1, "skipped": skipped.skipped,
        }

    return asyncio.run(both())


def run(quick: bool) -> dict:
    from images.build import build_image, notebook_requirements, wheelhouse
    from tests.fixtures.docker_engine import DockerEngine
    from tests.fixtures.machines import prepared_machine_image
    from tests.fixtures.sshd import SSHD, make_client_key

    n = 2 if quick else 5
    folder = Path(tempfile.mkdtemp(prefix="ttl-bench-"))
    folder.chmod(0o755)
    engine = DockerEngine().acquire()
    pool_user = f"ttl{secrets.token_hex(3)}"
    machine_user = "bench"
    create_unix_user(pool_user)
    sshd = SSHD().start()
    key_path, public = make_client_key(folder)
    sshd.authorize(pool_user, public)
    hubs = []
    try:
        ssh_machine = build_image("ssh-machine", engine.client)
        prepared = prepared_machine_image(engine.client, ssh_machine, build_image("notebook", engine.client))

        def make_hub(image, wheel_dir=None):
            path = folder / f"catalogue-{len(hubs)}.json"
            path.write_text(json.dumps(_catalogue(image, sshd, key_path, wheel_dir)))
            hub = Hub(f"""
c.JupyterHub.spawner_class = "multiple"
c.MultipleSpawner.catalogue_paths = [{str(path)!r}]
c.MachineOrchestrator.hub_id = "bench-{secrets.token_hex(4)}"
c.JupyterHub.log_level = "INFO"
""")
            hubs.append(hub)
            hub.start()
            for user in (machine_user, pool_user):
                hub.create_user(user)
            return hub

        hub = make_hub(prepared)
        container, pool, cache = [], [], None
        for i in range(n):
            container.append(timed_spawn(hub, machine_user, "container-machine"))
            if cache is None:
                lease = container[-1]["model"]["state"]["machine"]
                options = {"timeout": 600, "variables": {"notebook_env_path": "/opt/notebook"}}
                cache = configure_again(hub, machine_user, lease, options)
            hub.stop_server(machine_user, timeout=120)
            pool.append(timed_spawn(hub, pool_user, "pool-lab"))
            hub.stop_server(pool_user, timeout=120)

        cold = None
        if not quick:
            wheels = str(wheelhouse(notebook_requirements()))
            cold_hub = make_hub(ssh_machine, wheel_dir=wheels)
            cold = timed_spawn(cold_hub, machine_user, "container-machine")
            cold_hub.stop_server(machine_user, timeout=120)
    finally:
        for h in hubs:
            h.remove()
        sshd.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
        remove_unix_user(pool_user)
        engine.release()

    def phase_summary(runs):
        return {p: summary([r["phases"][p] for r in runs]) for p in PHASES if all(p in r["phases"] for r in runs)}

    result = {
        "n": n,
        "docker_prepared_image": {"phases": phase_summary(container),
                                  "total": summary([r["total"] for r in container])},
        "bare_metal_reference": {"phases": phase_summary(pool), "total": summary([r["total"] for r in pool])},
        "configuration_cache": cache,
        "ratio_total_docker_vs_bare_metal": (
            summary([r["total"] for r in container])["median"] / summary([r["total"] for r in pool])["median"]
        ),
    }
    if cold is not None:
        result["docker_plain_image_cold"] = {"phases": cold["phases"], "total": cold["total"]}
    return result


def plot(result: dict, path: Path) -> None:
    fig, (ax1, ax2) = new_figure("Time to lab by phase (medians, seconds)", ncols=2)
    rows = [("docker\n(prepared image)", result["docker_prepared_image"]["phases"]),
            ("bare metal\n(reference)", result["bare_metal_reference"]["phases"])]
    if "docker_plain_image_cold" in result:
        rows.append(("docker\n(plain image)", {p: {"median": v} for p, v in
                                               result["docker_plain_image_cold"]["phases"].items()}))
    for i, (label, phases) in enumerate(rows):
        left = 0.0
        for phase in PHASES:
            if phase in phases:
                width = phases[phase]["median"]
                ax1.barh(i, width, left=left, label=phase if i == 0 else None)
                left += width
    ax1.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax1.set_xlabel("seconds")
    ax1.legend()
    cache = result["configuration_cache"] or {}
    ax2.bar(["Ansible re-run", "hash matches: skipped"],
            [cache.get("ansible_rerun_s", 0), cache.get("skipped_s", 0)])
    ax2.set_title("configure the same machine again")
    ax2.set_ylabel("seconds")
    save(fig, path)
