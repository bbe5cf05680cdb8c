"""Time from "start" to a ready lab on a machine, split by phase, through a real hub.

One hub (MultipleSpawner, CHP) with these templates, spawned through the REST API:

* ``container-machine`` (``virtual_machine`` on the ``docker`` provider, prepared ssh-machine image
  with the notebook environment baked in, AnsibleConfigurer with the shipped playbooks);
* ``pool-lab`` (``bare_metal``): the reference, the same jupyterhub-singleuser started by
  CloudSSHSpawner on an already prepared sshd host (127.0.0.N), so only the start phase remains.

The two alternate. Phases come from the spawn's progress messages, timestamped by the hub's
log: create (provider.create), wait (sshd answers with the pinned key), configure (Ansible),
start (CloudSSHSpawner connects and launches, and the hub waits for the notebook to answer). The
pool reference has only the start phase.

The configuration cache, on real spawns: a second hub has a ``bare_metal`` pool of one host
that its configurer prepares (a container of the prepared image with an admin account,
tests/fixtures/machines.py:pool_host). With the ``certificate`` authenticator nothing per spawn
reaches the host: the first spawn runs Ansible, every later one finds the host's last
configuration hash unchanged and skips it. With the ``key`` authenticator every spawn brings a
new per-server key, so Ansible runs each time (and changes only the key): what a second spawn
costs without the cache.

Without ``--quick``, also once each: the plain ssh-machine image (the notebook environment
installed from wheels by Ansible), and a ``libvirt`` virtual machine under QEMU software
emulation (image of ``images/vm``, notebook environment baked in).
"""

from __future__ import annotations

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


def _cache_catalogue(host) -> dict:
    """The configured pool host twice: certificate logins (cacheable) and key logins."""
    from tests.integration.test_multiple_bare_metal import configured_pool_catalogue

    cat = configured_pool_catalogue(host)
    (cert,) = cat["templates"]
    key = dict(configured_pool_catalogue(host, authenticator="key")["templates"][0], name="pool-key")
    cat["templates"] = [dict(cert, name="pool-certificate"), key]
    return cat


def _vm_catalogue(image: Path) -> dict:
    from multiplespawner.machines import DEFAULT_NOTEBOOK_ENV
    from tests.integration.test_machines_docker import machine_catalogue

    return machine_catalogue(str(image), provider="libvirt", name="vm-machine", notebook_env=DEFAULT_NOTEBOOK_ENV,
                             cpu=2, spawner_kwargs={"start_timeout": 1200, "http_timeout": 900,
                                                    "connect_timeout": 60, "keepalive_interval": 10})


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


def run(quick: bool) -> dict:
    from images.build import build_image, notebook_requirements, wheelhouse
    from images.engine import DockerEngine
    from tests.fixtures.libvirt import LibvirtDaemon, published_vm_image
    from tests.fixtures.machines import hub_ca, pool_host, prepared_machine_image
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

        def make_hub(catalogue: dict, extra: str = ""):
            path = folder / f"catalogue-{len(hubs)}.json"
            path.write_text(json.dumps(catalogue))
            hub = Hub(f"""
c.JupyterHub.spawner_class = "multiple"
c.MultipleSpawner.catalogue_paths = [{str(path)!r}]
c.MachineOrchestrator.hub_id = "bench-{secrets.token_hex(4)}"
c.JupyterHub.log_level = "INFO"
{extra}
""")
            hubs.append(hub)
            hub.start()
            for user in (machine_user, pool_user):
                hub.create_user(user)
            return hub

        hub = make_hub(_catalogue(prepared, sshd, key_path, None))
        container, pool = [], []
        for _ in range(n):
            container.append(timed_spawn(hub, machine_user, "container-machine"))
            hub.stop_server(machine_user, timeout=120)
            pool.append(timed_spawn(hub, pool_user, "pool-lab"))
            hub.stop_server(pool_user, timeout=120)

        with pool_host(engine.client, prepared, folder) as host:
            ca_file, _ = hub_ca(folder)
            cache_hub = make_hub(_cache_catalogue(host), f"""
c.CredentialStore.ca_key_file = {str(ca_file)!r}
c.MachineOrchestrator.pool_admin_key_file = {str(host.admin_key)!r}
""")
            runs = {}
            for template in ["pool-certificate"] * (n + 1) + ["pool-key"] * n:
                runs.setdefault(template, []).append(timed_spawn(cache_hub, machine_user, template))
                cache_hub.stop_server(machine_user, timeout=120)
            first, *cached = runs["pool-certificate"]

        cold = vm = None
        if not quick:
            wheels = str(wheelhouse(notebook_requirements()))
            cold_hub = make_hub(_catalogue(ssh_machine, sshd, key_path, wheels))
            cold = timed_spawn(cold_hub, machine_user, "container-machine")
            cold_hub.stop_server(machine_user, timeout=120)
            with LibvirtDaemon() as daemon:
                storage = Path(tempfile.mkdtemp(prefix="ttl-bench-vm-", dir="/var/tmp"))
                storage.chmod(0o711)
                try:
                    vm_hub = make_hub(_vm_catalogue(published_vm_image()), f"""
c.MachineOrchestrator.provider_options = {{"libvirt": {{"uri": {daemon.uri!r}, "storage_dir": {str(storage)!r}}}}}
c.MachineOrchestrator.ready_timeout = 600
""")
                    vm = timed_spawn(vm_hub, machine_user, "vm-machine")
                    vm_hub.stop_server(machine_user, timeout=300)
                    vm_hub.remove()
                finally:
                    shutil.rmtree(storage, ignore_errors=True)
    finally:
        for h in hubs:
            h.remove()
        sshd.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
        remove_unix_user(pool_user)
        engine.release()

    def phase_summary(runs):
        return {p: summary([r["phases"][p] for r in runs]) for p in PHASES if all(p in r["phases"] for r in runs)}

    def block(runs):
        return {"phases": phase_summary(runs), "total": summary([r["total"] for r in runs])}

    def once(run):
        return {"phases": run["phases"], "total": run["total"]}

    result = {
        "n": n,
        "docker_prepared_image": block(container),
        "bare_metal_reference": block(pool),
        "ratio_total_docker_vs_bare_metal": (
            summary([r["total"] for r in container])["median"] / summary([r["total"] for r in pool])["median"]
        ),
        "configuration_cache": {
            "first_spawn": once(first),
            "second_spawns_hash_matches": block(cached),
            "second_spawns_new_key_each_time": block(runs["pool-key"]),
        },
    }
    if cold is not None:
        result["docker_plain_image_cold"] = once(cold)
    if vm is not None:
        result["libvirt_vm"] = once(vm)
    return result


def plot(result: dict, path: Path) -> None:
    fig, (ax1, ax2) = new_figure("Time to lab by phase (medians, seconds)", ncols=2)

    def medians(entry):  # a block of runs has summaries, a single run plain numbers
        return {p: v["median"] if isinstance(v, dict) else v for p, v in entry["phases"].items()}

    rows = [("docker\n(prepared image)", medians(result["docker_prepared_image"])),
            ("bare metal\n(reference)", medians(result["bare_metal_reference"]))]
    if "docker_plain_image_cold" in result:
        rows.append(("docker\n(plain image)", medians(result["docker_plain_image_cold"])))
    if "libvirt_vm" in result:
        rows.append(("libvirt VM\n(emulated)", medians(result["libvirt_vm"])))
    for i, (label, phases) in enumerate(rows):
        left = 0.0
        for j, phase in enumerate(PHASES):
            if phase in phases:
                ax1.barh(i, phases[phase], left=left, color=f"C{j}", label=phase if i == 0 else None)
                left += phases[phase]
    ax1.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax1.set_xlabel("seconds")
    ax1.legend()
    cache = result["configuration_cache"]
    entries = [("first spawn", medians(cache["first_spawn"])),
               ("later spawns,\nhash matches", medians(cache["second_spawns_hash_matches"])),
               ("later spawns,\nnew key each", medians(cache["second_spawns_new_key_each_time"]))]
    for i, (label, phases) in enumerate(entries):
        left = 0.0
        for j, phase in enumerate(PHASES):
            if phase in phases:
                ax2.bar(i, phases[phase], bottom=left, color=f"C{j}")
                left += phases[phase]
    ax2.set_xticks(range(len(entries)), [e[0] for e in entries])
    ax2.set_title("configured pool host: configure + start")
    ax2.set_ylabel("seconds")
    save(fig, path)
