"""Children start at a lower CPU weight than the hub: nice (and autogroup nice) for local
processes, ``cpu_shares`` for containers, unless the template or the operator says otherwise."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

from dockerspawner import DockerSpawner, SwarmSpawner
from jupyterhub.spawner import LocalProcessSpawner

from multiplespawner.children import CpuWeight, adapter_for
from multiplespawner.spawner import MultipleSpawner

PROBE = "import os; print(os.getpriority(os.PRIO_PROCESS, 0)); print(open('/proc/self/autogroup').read())"


def _prepared(tmp_path, spawner_class, kwargs=None, **config):
    # one file per spawner: catalogues are shared (and cached) by path
    f = tmp_path / f"catalogue-{len(list(tmp_path.iterdir()))}.json"
    f.write_text(json.dumps({
        "deployments": {"local": [{"name": "hub", "provider": "local"}]},
        "templates": [{"name": "t", "resource_type": "local", "providers": ["local"],
                       "spawner": {"class": spawner_class, "kwargs": kwargs or {}}}],
    }))
    user = SimpleNamespace(name="ann", admin=False, groups=[])
    spawner = MultipleSpawner(user=user, catalogue_paths=[str(f)], **config)
    return spawner


def _run_like_the_child(child) -> tuple[int, str]:
    """Start a probe the way LocalProcessSpawner starts the notebook (new session), record its
    PID on the child as LocalProcessSpawner does, then let the probe report its nice value and
    its autogroup line."""
    probe = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline(); " + PROBE],
                             start_new_session=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    child.pid = probe.pid
    out, _ = probe.communicate("go\n", timeout=60)
    nice, autogroup = out.splitlines()[:2]
    return int(nice), autogroup


async def test_local_children_start_at_the_configured_nice_value_and_autogroup(tmp_path):
    spawner = _prepared(tmp_path, "jupyterhub.spawner.LocalProcessSpawner", {"cmd": ["/bin/true"]})
    assert spawner.child_nice == 19  # on by default
    await spawner.prepare({"template": "t"})
    nice, autogroup = _run_like_the_child(spawner.child)
    assert nice == 19
    assert autogroup.endswith(" nice 19"), autogroup


async def test_local_children_keep_the_hubs_weight_when_turned_off(tmp_path):
    spawner = _prepared(tmp_path, "jupyterhub.spawner.LocalProcessSpawner", {"cmd": ["/bin/true"]}, child_nice=0)
    await spawner.prepare({"template": "t"})
    nice, autogroup = _run_like_the_child(spawner.child)
    assert nice == os.getpriority(os.PRIO_PROCESS, 0)
    assert autogroup.endswith(" nice 0"), autogroup


async def test_containers_get_lower_cpu_shares_unless_the_template_sets_them(tmp_path):
    spawner = _prepared(tmp_path, "dockerspawner.DockerSpawner", {"extra_host_config": {"mem_swappiness": 0}})
    await spawner.prepare({"template": "t"})
    assert spawner.child.extra_host_config == {"mem_swappiness": 0, "cpu_shares": 128}

    spawner = _prepared(tmp_path, "dockerspawner.DockerSpawner", {"extra_host_config": {"cpu_shares": 512}})
    await spawner.prepare({"template": "t"})
    assert spawner.child.extra_host_config == {"cpu_shares": 512}

    spawner = _prepared(tmp_path, "dockerspawner.DockerSpawner", child_cpu_shares=0)
    await spawner.prepare({"template": "t"})
    assert spawner.child.extra_host_config == {}


async def test_a_callable_host_config_gets_the_shares_added_to_what_it_returns():
    async def from_operator(spawner):
        return {"pids_limit": 100}

    child = DockerSpawner(extra_host_config=from_operator)
    adapter_for(DockerSpawner).lower_cpu_weight(child, CpuWeight(nice=19, cpu_shares=64))
    assert await child.extra_host_config(child) == {"pids_limit": 100, "cpu_shares": 64}

    child = DockerSpawner(extra_host_config=lambda spawner: {"cpu_shares": 2048})
    adapter_for(DockerSpawner).lower_cpu_weight(child, CpuWeight(nice=19, cpu_shares=64))
    assert await child.extra_host_config(child) == {"cpu_shares": 2048}


def test_swarm_services_are_left_alone():
    child = SwarmSpawner()
    adapter_for(SwarmSpawner).lower_cpu_weight(child, CpuWeight(nice=19, cpu_shares=64))
    assert child.extra_host_config == {}
