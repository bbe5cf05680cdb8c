"""KubeSpawner (the real ``kubespawner.KubeSpawner``) as MultipleSpawner's child, without a cluster.

The spawner is made the way the hub makes it: a JupyterHub ``User`` over an in-memory hub
database builds MultipleSpawner for a named server, which gets its ``orm.Server``, API token and
``user_options`` as ``User.spawn`` gives them, then ``run_pre_spawn_hook`` checks the choice and
builds the child. KubeSpawner reads a kube config when it is constructed; the one used here names
an "API server" that is a listener on 127.0.0.1 counting connections, and every test ends by
checking that nothing connected to it: building the child, its environment, its pod manifest and
its state need no cluster.
"""

import asyncio
import json
import subprocess
import sys

import kubernetes_asyncio.client
import kubernetes_asyncio.config.kube_config
import pytest
from jupyterhub import orm
from jupyterhub.objects import Hub, Server
from jupyterhub.user import User
from kubespawner import KubeSpawner
from kubespawner import clients as kube_clients
from traitlets.config import Config

from multiplespawner.catalogue import CatalogueError, CataloguePolicy, load_catalogue
from multiplespawner.errors import SpawnException
from multiplespawner.spawner import HUB_TIMEOUT_MARGIN, MultipleSpawner, TemplateError, spawner_class_for

IMAGE = "quay.io/jupyter/base-notebook:2025-01-06"
MiB = 1024 * 1024


class ManifestOnlyKubeSpawner(KubeSpawner):
    """KubeSpawner whose ``start`` ends where the API server would be asked for the pod.

    It runs what KubeSpawner's own start runs first (``load_user_options``, which applies a
    ``profile_list``) and keeps the pod manifest it would send; everything else is KubeSpawner's.
    """

    manifest = None

    async def start(self):
        await self.load_user_options()
        self.manifest = await self.get_pod_manifest()
        return f"http://127.0.0.1:{self.port}"


def _template(name="kube", spawner_class="kubespawner.KubeSpawner", **kwargs):
    return {
        "name": name, "resource_type": "container", "providers": ["kubernetes"],
        "access": {"groups": ["course-k8s"]},
        "resources": {"cpu": {"default": 1, "min": 0.5, "max": 4},
                      "memory_mb": {"default": 1024, "min": 512, "max": 8192},
                      "gpus": {"default": 0, "max": 2}},
        "environment": {"COURSE": "k8s", "OWNER": "{JUPYTERHUB_USER}"},
        "spawner": {"class": spawner_class,
                    "kwargs": {"image": "{DEPLOYMENT_IMAGE}", "namespace": "course-k8s", **kwargs}},
    }


def _write_catalogue(path, *templates):
    path.write_text(json.dumps({
        "deployments": {"container": [{"name": "cluster", "provider": "kubernetes", "image": IMAGE}]},
        "templates": list(templates),
    }))
    return path


@pytest.fixture
async def api_server(tmp_path, monkeypatch):
    """A kube config naming a loopback "API server" that only counts connections (must stay 0)."""
    connections = []

    def count(reader, writer):
        connections.append(writer.get_extra_info("peername"))
        writer.close()

    server = await asyncio.start_server(count, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    kube_config = tmp_path / "kubeconfig"
    kube_config.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": f"https://127.0.0.1:{port}",
                                                  "insecure-skip-tls-verify": True}}],
        "users": [{"name": "test", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    }))
    # the location KubeSpawner's load_config reads when the hub does not run inside a cluster
    monkeypatch.setattr(kubernetes_asyncio.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kube_config))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    saved = kubernetes_asyncio.client.Configuration.get_default_copy()
    kube_clients.load_config.cache_clear()  # loaded once per process otherwise
    yield connections
    kube_clients.load_config.cache_clear()
    kubernetes_asyncio.client.Configuration.set_default(saved)
    server.close()
    await server.wait_closed()
    assert connections == [], "something talked to the Kubernetes API server"


@pytest.fixture
def hub(tmp_path):
    """``spawn(server_name, options, ...)``: a MultipleSpawner prepared as ``User.spawn`` prepares it."""
    db = orm.new_session_factory("sqlite://")()
    group = orm.Group(name="course-k8s")
    db.add(group)
    db.commit()

    def make_user(config: Config, name="ann") -> User:
        orm_user = db.query(orm.User).filter_by(name=name).first()
        if orm_user is None:
            orm_user = orm.User(name=name)
            orm_user.groups.append(group)
            db.add(orm_user)
            db.commit()
        settings = {"spawner_class": MultipleSpawner, "config": config, "allow_named_servers": True,
                    "hub": Hub(ip="127.0.0.1", port=8081, base_url="/hub/")}
        return User(orm_user, settings)

    async def spawn(server_name, options, *templates, config=None, run_hook=True):
        config = config or Config()
        config.MultipleSpawner.catalogue_paths = [str(_write_catalogue(tmp_path / "catalogue.json", *templates))]
        user = make_user(config)
        if server_name not in user.orm_spawners:
            user._new_orm_spawner(server_name, "")
        orm_server = orm.Server(base_url=f"{user.base_url}{server_name}/")
        db.add(orm_server)
        db.commit()
        spawner = user.spawners[server_name]
        spawner.server = Server(orm_server=orm_server)
        spawner.user_options = options
        spawner.clear_state()
        spawner.api_token = "server-token-0123456789"
        if run_hook:
            await spawner.run_pre_spawn_hook()
        return spawner

    spawn.make_user = make_user
    return spawn


def test_importing_kubespawner_reaches_no_cluster(tmp_path):
    """Import (what the catalogue reload does) reads no kube config; only construction does."""
    code = ("import kubespawner, kubespawner.clients as c\n"
            "from multiplespawner.spawner import spawner_class_for\n"
            "spawner_class_for('kubespawner.KubeSpawner')\n"
            "print(c.load_config.cache_info().misses)\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "missing"),
           "PYTHONPATH": ":".join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_kubespawner_is_named_by_its_dotted_path(tmp_path):
    """kubespawner registers no ``jupyterhub.spawners`` entry point: ``kubernetes`` is a catalogue error."""
    assert spawner_class_for("kubespawner.KubeSpawner") is KubeSpawner
    with pytest.raises(TemplateError, match="no spawner is registered under the name 'kubernetes'"):
        spawner_class_for("kubernetes")
    path = _write_catalogue(tmp_path / "c.json", _template(spawner_class="kubernetes"))
    with pytest.raises(CatalogueError, match="at /templates/0/spawner/class: no spawner is registered"):
        load_catalogue([path], CataloguePolicy(spawner_classes=frozenset({"kubernetes"})))


async def test_template_builds_a_kubespawner_with_the_chosen_resources(api_server, hub):
    spawner = await hub("gpu-box", {"template": "kube", "cpu": 2, "memory_mb": 2048, "gpus": 1}, _template())
    child = spawner.child
    assert type(child) is KubeSpawner
    # the chosen resources
    assert child.cpu_limit == 2.0 and child.mem_limit == 2048 * MiB
    assert child.extra_resource_limits == {"nvidia.com/gpu": "1"}
    assert child.cpu_guarantee is None and child.mem_guarantee is None  # Kubernetes: requests = limits
    # the template's kwargs, placeholders resolved
    assert child.image == IMAGE and child.namespace == "course-k8s"
    # the hub's plumbing: same user, server record and name, so KubeSpawner names the pod after them
    assert child.user is spawner.user and child.orm_spawner is spawner.orm_spawner
    assert child.name == "gpu-box" and child.server.base_url == "/user/ann/gpu-box/"
    assert child.pod_name == "jupyter-ann--gpu-box"
    assert child.api_token == spawner.api_token and child.hub is spawner.hub
    assert child.oauth_client_id == "jupyterhub-user-ann-gpu-box"
    assert spawner.start_timeout == child.start_timeout + HUB_TIMEOUT_MARGIN
    assert spawner.http_timeout == child.http_timeout

    pod = await child.get_pod_manifest()
    assert pod.metadata.name == "jupyter-ann--gpu-box"
    assert pod.metadata.labels["hub.jupyter.org/username"] == "ann"
    assert pod.metadata.labels["hub.jupyter.org/servername"] == "gpu-box"
    (container,) = pod.spec.containers
    assert container.image == IMAGE
    assert container.resources.limits == {"cpu": 2.0, "memory": 2048 * MiB, "nvidia.com/gpu": "1"}
    assert not container.resources.requests
    env = {e.name: e.value for e in container.env}
    assert env["JUPYTERHUB_USER"] == "ann" and env["JUPYTERHUB_SERVER_NAME"] == "gpu-box"
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == "/user/ann/gpu-box/"
    assert env["JUPYTERHUB_API_TOKEN"] == spawner.api_token
    assert env["CPU_LIMIT"] == "2.0" and env["MEM_LIMIT"] == str(2048 * MiB)


async def test_template_guarantees_fit_the_chosen_limits_and_extra_limits_merge(api_server, hub):
    template = _template(cpu_guarantee=1, mem_guarantee="1G", extra_resource_limits={"example.com/fpga": "1"})
    small = (await hub("small", {"template": "kube", "cpu": 0.5, "memory_mb": 512, "gpus": 2}, template)).child
    # a request above the limit would make the API server refuse the pod: lowered to the limit
    assert small.cpu_guarantee == 0.5 and small.mem_guarantee == 512 * MiB
    assert small.extra_resource_limits == {"example.com/fpga": "1", "nvidia.com/gpu": "2"}
    resources = (await small.get_pod_manifest()).spec.containers[0].resources
    assert resources.requests == {"cpu": 0.5, "memory": 512 * MiB}
    assert resources.limits == {"cpu": 0.5, "memory": 512 * MiB, "example.com/fpga": "1", "nvidia.com/gpu": "2"}

    large = (await hub("large", {"template": "kube", "cpu": 4, "memory_mb": 4096}, template)).child
    assert large.cpu_guarantee == 1 and large.mem_guarantee == 1024 * MiB  # below the limit: kept
    assert large.extra_resource_limits == {"example.com/fpga": "1"}


async def test_environment_reaches_the_child_and_profile_list_config_changes_nothing(api_server, hub):
    """Through MultipleSpawner.start: template, configuration and pre_spawn_hook environment reach
    the child's get_env() and the pod; a configured KubeSpawner.profile_list, which KubeSpawner
    applies at start, neither replaces the chosen resources nor the template's image."""
    config = Config()
    config.Spawner.environment = {"FROM_CONFIG": "c"}
    config.MultipleSpawner.pre_spawn_hook = lambda spawner: spawner.environment.update(FROM_HOOK="h")
    config.KubeSpawner.profile_list = [{"display_name": "big", "slug": "big", "default": True,
                                        "kubespawner_override": {"cpu_limit": 16, "image": "elsewhere:latest"}}]
    template = _template(spawner_class=f"{__name__}.ManifestOnlyKubeSpawner")
    config.MultipleSpawner.allowed_spawner_classes = [f"{__name__}.ManifestOnlyKubeSpawner"]
    spawner = await hub("", {"template": "kube", "cpu": 1.5}, template, config=config)
    assert spawner.child.profile_list == []
    assert await spawner.start() == "http://127.0.0.1:8888"
    child = spawner.child
    env = child.get_env()
    assert env["COURSE"] == "k8s" and env["OWNER"] == "ann"
    assert env["FROM_CONFIG"] == "c" and env["FROM_HOOK"] == "h"
    assert env["JUPYTERHUB_API_TOKEN"] == spawner.api_token
    pod_env = {e.name: e.value for e in child.manifest.spec.containers[0].env}
    assert {k: pod_env[k] for k in ("COURSE", "OWNER", "FROM_CONFIG", "FROM_HOOK")} == {
        "COURSE": "k8s", "OWNER": "ann", "FROM_CONFIG": "c", "FROM_HOOK": "h"}
    assert child.cpu_limit == 1.5 and child.image == IMAGE
    assert child.manifest.spec.containers[0].image == IMAGE
    assert child.manifest.spec.containers[0].resources.limits["cpu"] == 1.5


async def test_a_template_setting_profile_list_is_refused_before_a_child_is_built(api_server, hub):
    template = _template(profile_list=[{"display_name": "x", "kubespawner_override": {"cpu_limit": 8}}])
    with pytest.raises(SpawnException) as info:
        await hub("", {"template": "kube"}, template)
    assert info.value.reason == "template_error"
    assert "profile_list" in info.value.message
    assert kube_clients.load_config.cache_info().misses == 0  # no KubeSpawner was constructed


@pytest.mark.parametrize("options, problem", [
    ({"cpu": 8}, "cpu 8 is outside"),
    ({"memory_mb": 256}, "memory_mb 256 is outside"),
    ({"gpus": 3}, "gpus 3 is outside"),
    ({"image": "elsewhere:latest"}, "image"),  # KubeSpawner traits are not user options
    ({"profile": "big"}, "profile"),  # nor are KubeSpawner's profile_list choices
])
async def test_bad_choices_are_refused_before_a_child_is_built(api_server, hub, options, problem):
    spawner = await hub("", {"template": "kube", **options}, _template(), run_hook=False)
    with pytest.raises(SpawnException) as info:
        await spawner.run_pre_spawn_hook()
    assert info.value.status_code == 400 and info.value.reason == "invalid_user_options"
    assert problem in info.value.message
    assert spawner.child is None and spawner.get_state() == {}
    assert kube_clients.load_config.cache_info().misses == 0  # no KubeSpawner was constructed


async def test_state_rebuilds_the_same_kubespawner_after_a_hub_restart(api_server, hub, tmp_path):
    spawner = await hub("gpu-box", {"template": "kube", "cpu": 2, "memory_mb": 2048, "gpus": 1}, _template())
    state = json.loads(json.dumps(spawner.get_state()))  # as stored in the hub database
    assert state["child_state"]["pod_name"] == "jupyter-ann--gpu-box"
    assert state["child_state"]["namespace"] == "course-k8s"

    # a new hub process: the catalogue no longer has the template (the record is enough), and
    # the configuration now has a profile_list (the recorded child does not take it)
    config = Config()
    config.MultipleSpawner.catalogue_paths = [str(_write_catalogue(tmp_path / "catalogue.json"))]
    config.KubeSpawner.profile_list = [{"display_name": "big", "kubespawner_override": {"cpu_limit": 16}}]
    restarted = hub.make_user(config).spawners["gpu-box"]
    restarted.load_state(state)
    child = restarted.child
    assert type(child) is KubeSpawner and child.name == "gpu-box"
    assert (child.pod_name, child.namespace, child.image) == ("jupyter-ann--gpu-box", "course-k8s", IMAGE)
    assert (child.cpu_limit, child.mem_limit, child.extra_resource_limits) == (2.0, 2048 * MiB, {"nvidia.com/gpu": "1"})
    assert child.profile_list == []
    assert restarted.get_state() == state


async def test_a_hub_without_kube_config_gets_a_clear_template_error(hub, tmp_path, monkeypatch):
    """No kube config and not inside a cluster: KubeSpawner cannot be built; the spawn stops
    with a template error that says so (not a 500 with a traceback)."""
    monkeypatch.setattr(kubernetes_asyncio.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION",
                        str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    saved = kubernetes_asyncio.client.Configuration.get_default_copy()
    kube_clients.load_config.cache_clear()
    try:
        with pytest.raises(SpawnException) as info:
            await hub("", {"template": "kube"}, _template())
    finally:
        kube_clients.load_config.cache_clear()
        kubernetes_asyncio.client.Configuration.set_default(saved)
    assert info.value.reason == "template_error" and info.value.status_code == 500
    assert info.value.message.startswith("Template 'kube' cannot be used: KubeSpawner could not be set up: ")


async def test_a_trait_value_the_child_refuses_is_a_template_error(hub):
    template = _template(name="bad", spawner_class="jupyterhub.spawner.LocalProcessSpawner")
    template["spawner"]["kwargs"] = {"cmd": 5}
    with pytest.raises(SpawnException) as info:
        await hub("", {"template": "bad"}, template)
    assert info.value.reason == "template_error"
    assert "LocalProcessSpawner could not be set up" in info.value.message and "cmd" in info.value.message
