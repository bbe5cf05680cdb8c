"""Child class resolution, the mapping of chosen resources onto the child's traits, group
overrides on the child, and the spawner state round trip."""

import json
import time
from types import SimpleNamespace

import pytest
from batchspawner import SlurmSpawner, TorqueSpawner
from dockerspawner import DockerSpawner
from jupyterhub.spawner import LocalProcessSpawner, SpawnException
from traitlets.config import Config

from multiplespawner.catalogue import load_catalogue
from multiplespawner.choices import resolve_choice
from multiplespawner.children import resource_kwargs
from multiplespawner.spawner import HUB_TIMEOUT_MARGIN, MultipleSpawner, TemplateError, spawner_class_for


def test_spawner_class_for():
    assert spawner_class_for("jupyterhub.spawner.LocalProcessSpawner") is LocalProcessSpawner
    assert spawner_class_for("docker") is DockerSpawner  # dockerspawner's entry point
    with pytest.raises(TemplateError, match="cannot import"):
        spawner_class_for("nowhere.Spawner")
    with pytest.raises(TemplateError, match="not a JupyterHub Spawner"):
        spawner_class_for("json.JSONDecoder")
    with pytest.raises(TemplateError, match="is a MultipleSpawner"):
        spawner_class_for("multiple")
    with pytest.raises(TemplateError, match="no spawner is registered"):
        spawner_class_for("no-such-entry-point")


def testresource_kwargs(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({
        "deployments": {"container": [{"name": "d", "provider": "docker", "image": "nb"}]},
        "templates": [{"name": "gpu", "resource_type": "container", "providers": ["docker"],
                       "resources": {"cpu": {"default": 2}, "memory_mb": {"default": 512},
                                     "gpus": {"default": 1, "max": 2}},
                       "spawner": {"class": "docker", "kwargs": {"extra_host_config": {"shm_size": "1g"}}}}],
    }))
    choice = resolve_choice(load_catalogue([f]), {"gpus": 2}, user_name="a", groups=[], admin=False)
    kwargs = resource_kwargs(DockerSpawner, choice)
    assert kwargs["cpu_limit"] == 2.0 and kwargs["mem_limit"] == "512M"
    assert kwargs["extra_host_config"]["shm_size"] == "1g"
    assert kwargs["extra_host_config"]["device_requests"][0]["Count"] == 2
    assert "extra_host_config" not in resource_kwargs(LocalProcessSpawner, choice)
    assert DockerSpawner(**resource_kwargs(DockerSpawner, choice)).mem_limit == 512 * 1024 * 1024


def test_resource_kwargs_for_batchspawner(tmp_path):
    """A batch job asks the batch system for the chosen resources: whole CPUs, MiB, GPUs as gres."""
    f = tmp_path / "c.json"
    f.write_text(json.dumps({
        "deployments": {"batch": [{"name": "cluster", "provider": "slurm"}]},
        "templates": [{"name": "job", "resource_type": "batch", "providers": ["slurm"],
                       "resources": {"cpu": {"default": 1, "min": 0.5, "max": 4},
                                     "memory_mb": {"default": 512, "max": 4096},
                                     "gpus": {"default": 0, "max": 2}},
                       "spawner": {"class": "batchspawner.SlurmSpawner"}}],
    }))
    catalogue = load_catalogue([f])

    def kwargs_for(cls, **options):
        return resource_kwargs(cls, resolve_choice(catalogue, options, user_name="a", groups=[], admin=False))

    kwargs = kwargs_for(SlurmSpawner, cpu=1.5, memory_mb=2048, gpus=2)
    assert kwargs == {"cpu_limit": 1.5, "req_nprocs": "2", "mem_limit": "2048M", "req_memory": "2048M",
                      "req_gres": "gpu:2"}
    child = SlurmSpawner(**kwargs)  # the job script's {{nprocs}}, {{memory}}, {{gres}}
    assert (child.req_nprocs, child.req_memory, child.req_gres) == ("2", "2048M", "gpu:2")
    assert kwargs_for(SlurmSpawner, cpu=0.5)["req_nprocs"] == "1"
    assert "req_gres" not in kwargs_for(SlurmSpawner)  # no GPUs chosen, none asked for
    # other batch systems get CPUs and memory (their scripts have no gres)
    assert kwargs_for(TorqueSpawner, gpus=1).keys() == {"cpu_limit", "req_nprocs", "mem_limit", "req_memory"}
    assert kwargs_for(LocalProcessSpawner, gpus=1) == {"cpu_limit": 1.0, "mem_limit": "512M"}


def _spawner(groups=(), **config) -> MultipleSpawner:
    """A MultipleSpawner for a user outside any hub (enough for building and restoring children)."""
    user = SimpleNamespace(name="ann", admin=False, groups=[SimpleNamespace(name=g) for g in groups])
    return MultipleSpawner(user=user, **config)


def test_state_round_trip_rebuilds_the_recorded_child_whatever_the_catalogue_says():
    """load_state rebuilds the child from the record alone (class, kwargs, timeouts, child state)."""
    record = {
        "template": "gone-from-the-catalogue",
        "catalogue_version": "0123456789ab",
        "options": {"template": "gone-from-the-catalogue", "provider": "local"},
        "child_class": "jupyterhub.spawner.LocalProcessSpawner",
        "child_kwargs": {"cmd": ["/bin/true"], "start_timeout": 7, "http_timeout": 9},
        "environment": {"WHO": "ann/"},
        "lifetime_minutes": 30,
        "deadline": time.time() + 1800,
    }
    state = {"multiple": record, "child_state": {"pid": 4242},
             "last_child": {"child_class": record["child_class"], "child_kwargs": record["child_kwargs"]}}
    spawner = _spawner(catalogue_paths=["/nonexistent/catalogue.json"])
    spawner.load_state(json.loads(json.dumps(state)))  # as it comes back from the database
    child = spawner.child
    assert type(child) is LocalProcessSpawner and child.cmd == ["/bin/true"] and child.pid == 4242
    assert spawner.http_timeout == 9 and spawner.start_timeout == 7 + HUB_TIMEOUT_MARGIN
    assert spawner.deadline == record["deadline"]
    assert spawner.get_state() == state
    assert json.loads(json.dumps(spawner.get_state())) == state

    spawner.clear_state()
    assert spawner.child is None and spawner.deadline is None
    assert spawner.get_state() == {"last_child": state["last_child"]}  # delete_forever can still reach it


async def test_invalid_machine_settings_fail_machine_spawns_with_their_message_only(tmp_path):
    """A malformed c.MachineOrchestrator.pool_hosts fails a bare_metal spawn with the problem
    (a handled SpawnException, not an unhandled TraitError); a local template needs no machine
    settings and still prepares."""
    f = tmp_path / "catalogue.json"
    f.write_text(json.dumps({
        "deployments": {"local": [{"name": "hub", "provider": "local"}],
                        "bare_metal": [{"name": "local_machine", "provider": "local"}]},
        "templates": [
            {"name": "pool", "resource_type": "bare_metal", "providers": ["local"],
             "spawner": {"class": "cloudsshspawner.CloudSSHSpawner"}},
            {"name": "here", "resource_type": "local", "providers": ["local"],
             "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner"}},
        ],
    }))
    config = Config()
    config.MachineOrchestrator.pool_hosts = {"local_machine": [{"address": "node1"}]}
    spawner = _spawner(config=config, catalogue_paths=[str(f)])
    with pytest.raises(SpawnException) as e:
        await spawner.prepare({"template": "pool"})
    assert (e.value.status_code, e.value.reason) == (500, "config_error")
    assert e.value.message == ("The hub's machine settings are invalid: c.MachineOrchestrator.pool_hosts: "
                               "local_machine/0: 'host_key' is a required property")
    await spawner.prepare({"template": "here"})
    assert type(spawner.child) is LocalProcessSpawner and spawner.machine is None


def test_state_with_a_class_that_no_longer_imports_leaves_no_child():
    spawner = _spawner()
    spawner.load_state({"multiple": {"template": "t", "child_class": "nowhere.Spawner", "child_kwargs": {}}})
    assert spawner.child is None


async def test_group_overrides_reach_the_child_below_template_and_choice():
    overrides = {
        "01-a": {"groups": ["course-a"], "spawner_override": {
            "cpu_limit": 0.25, "mem_limit": "2G", "environment": {"FROM_GROUP": "a"},
            "notebook_dir": lambda child: f"/srv/{child.user.name}"}},
        "02-b": {"groups": ["course-b"], "spawner_override": {"http_timeout": 3}},
    }
    spawner = _spawner(groups=["course-a"], group_overrides=overrides)
    # the template set mem_limit (a chosen resource): that wins over the group override
    kwargs = {"cmd": ["/bin/true"], "mem_limit": "512M"}
    spawner.child = spawner._build_child(LocalProcessSpawner, kwargs)
    applied = await spawner._apply_group_overrides_to_child(protected=set(kwargs))
    child = spawner.child
    assert child.cpu_limit == 0.25 and child.notebook_dir == "/srv/ann"
    assert child.mem_limit == 512 * 1024 * 1024
    assert child.environment["FROM_GROUP"] == "a"
    assert child.http_timeout == LocalProcessSpawner().http_timeout  # course-b only
    # recorded for a rebuild after restart: JSON, without the environment
    assert applied == {"cpu_limit": 0.25, "notebook_dir": "/srv/ann"}
    rebuilt = spawner._build_child(LocalProcessSpawner, {**applied, **kwargs})
    assert rebuilt.cpu_limit == 0.25 and rebuilt.notebook_dir == "/srv/ann"


def test_the_child_gets_no_user_options():
    """MultipleSpawner's options are its own: the child gets the choice as traits. (batchspawner
    formats its job script with every user option, and ``template`` breaks that.)"""
    spawner = _spawner()
    spawner.user_options = {"template": "job", "cpu": 2}
    child = spawner._build_child(SlurmSpawner, {"req_nprocs": "2"})
    assert child.user_options == {} and child.req_nprocs == "2"


def test_a_port_reported_while_the_child_starts_is_the_childs():
    """batchspawner's job reports its port to the hub's spawner (MultipleSpawner): it reaches
    the child while the child's start waits for it, and only then."""
    spawner = _spawner()
    spawner.child = spawner._build_child(SlurmSpawner, {})
    spawner.port = 4000  # not spawning
    assert spawner.child.port == 0
    spawner._spawn_pending = True
    spawner.port = 4001  # spawning, but the child's start has not begun
    assert spawner.child.port == 0
    spawner._child_start_begun = True
    spawner.port = 4002
    assert spawner.child.port == 4002
    spawner._spawn_pending = False
    spawner.port = 4003  # the server is up: nothing more to hand over
    assert spawner.child.port == 4002


async def test_progress_never_goes_back_at_the_handover_to_the_child():
    """MultipleSpawner's phases end at 30 %; a child that counts from its own 0 (CloudSSHSpawner
    says 10 % for "Connecting") is mapped into the range left, so the bar only moves forward."""
    spawner = _spawner()

    async def cloudssh_like_progress():
        for percent, message in [(10, "Connecting"), (40, "Tunnel up"), (60, "Starting"), (60, "Again"),
                                 (35, "A child going back"), (80, "Waiting")]:
            yield {"progress": percent, "message": message}
        yield {"message": "no percentage"}

    spawner.child = SimpleNamespace(progress=cloudssh_like_progress)
    spawner._spawn_pending = True
    spawner._event(10, "Template t on local")
    spawner._event(30, "Starting CloudSSHSpawner")
    spawner._child_start_begun = True
    spawner._events.finish()
    events = [e async for e in spawner.progress()]
    assert [e["message"] for e in events] == ["Template t on local", "Starting CloudSSHSpawner", "Connecting",
                                              "Tunnel up", "Starting", "Again", "A child going back", "Waiting",
                                              "no percentage"]
    shown = [e["progress"] for e in events if "progress" in e]
    assert shown == [10, 30, 37, 58, 72, 72, 72, 86]
    assert shown == sorted(shown) and shown[-1] < 100


def test_the_adapter_of_the_nearest_class_in_the_mro_is_used():
    from dockerspawner import SwarmSpawner
    from jupyterhub.spawner import Spawner
    from kubespawner import KubeSpawner

    from cloudsshspawner import CloudSSHSpawner
    from multiplespawner.children import ChildAdapter, adapter_for
    from multiplespawner.children.batch import BatchAdapter
    from multiplespawner.children.cloudssh import CloudSSHAdapter
    from multiplespawner.children.docker import DockerAdapter
    from multiplespawner.children.kube import KubeAdapter
    from multiplespawner.children.local import LocalProcessAdapter
    from multiplespawner.children.swarm import SwarmAdapter

    class OwnLocal(LocalProcessSpawner):
        pass

    class OwnSpawner(Spawner):
        async def start(self):
            return "http://127.0.0.1:1"

        async def poll(self):
            return 0

        async def stop(self, now=False):
            return None

    expected = [(DockerSpawner, DockerAdapter), (SwarmSpawner, SwarmAdapter), (KubeSpawner, KubeAdapter),
                (SlurmSpawner, BatchAdapter), (TorqueSpawner, BatchAdapter), (CloudSSHSpawner, CloudSSHAdapter),
                (LocalProcessSpawner, LocalProcessAdapter), (OwnLocal, LocalProcessAdapter),
                (OwnSpawner, ChildAdapter)]
    assert [(cls, type(adapter_for(cls))) for cls, _ in expected] == expected
    assert [cls for cls, _ in expected if adapter_for(cls).runs_on_machines] == [CloudSSHSpawner]


async def test_operators_can_replace_the_spawn_form_template(tmp_path):
    """c.MultipleSpawner.options_form_template is a Jinja template (autoescaped) that gets the
    form's variables; its default is the packaged spawn_form.html."""
    from multiplespawner.form import default_form_template

    catalogue = {"deployments": {"local": [{"name": "hub-host", "provider": "local"}]}, "templates": [
        {"name": "plain", "display_name": "Plain <b>", "resource_type": "local", "providers": ["local"],
         "resources": {"cpu": {"default": 1, "min": 0.5, "max": 2}},
         "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner", "kwargs": {}}}]}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(catalogue))
    assert _spawner(catalogue_paths=[str(path)]).options_form_template == default_form_template()
    assert 'id="multiplespawner-form"' in await _spawner(catalogue_paths=[str(path)]).render_options_form()
    own = ("{% for t in templates %}<p>{{ t.display_name }}{% for f in t.fields %} {{ f.key }}:{{ f.min }}-"
           "{{ f.max }}={{ f.value }}{% endfor %}</p>{% endfor %}")
    spawner = _spawner(catalogue_paths=[str(path)], options_form_template=own)
    assert await spawner.render_options_form() == "<p>Plain &lt;b&gt; cpu:0.5-2=1</p>"


async def test_a_wait_in_line_cut_by_a_hub_restart_becomes_a_notice_until_the_next_spawn(tmp_path):
    """A stored ``waiting`` (the spawn waited in line when the hub stopped) becomes the spawn
    form's notice; it survives the hub's clean-up of that server (clear_state, then get_state
    stored) and goes when the user starts again."""
    f = tmp_path / "catalogue.json"
    f.write_text(json.dumps({
        "deployments": {"local": [{"name": "hub", "provider": "local"}]},
        "templates": [{"name": "here", "display_name": "GPU notebook", "resource_type": "local",
                       "providers": ["local"], "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner"}}],
    }))
    spawner = _spawner(catalogue_paths=[str(f)])
    since = 1_700_000_000.0  # 22:13 UTC
    spawner.load_state({"last_child": None, "waiting": {"template": "GPU notebook", "since": since}})
    assert spawner.child is None  # nothing of the wait is rebuilt
    notice = ("Your place in line for GPU notebook (waiting since 22:13 UTC) was lost when the hub "
              "restarted. Start again to join the line.")
    spawner.clear_state()
    assert spawner.get_state() == {"notice": notice}
    restored = _spawner(catalogue_paths=[str(f)])
    restored.load_state(json.loads(json.dumps(spawner.get_state())))  # a later spawner object
    html = await restored.render_options_form()
    assert 'id="ms-notice"' in html and "GPU notebook (waiting since 22:13 UTC) was lost" in html
    await restored.prepare({"template": "here"})
    assert "notice" not in restored.get_state()
    assert 'id="ms-notice"' not in await restored.render_options_form()
