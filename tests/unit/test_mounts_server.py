"""A template's ``mounts``: the catalogue's checks, who may edit them, the plan from auth_state
(messages name the mount and the entry, never a value), mount_all's order and undo, the Docker
adapter's bind volumes, MultipleSpawner's refusal for other resource types and its state."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from dockerspawner import DockerSpawner
from jupyterhub.spawner import SpawnException

from multiplespawner.catalogue import CatalogueError, load_catalogue
from multiplespawner.children import adapter_for
from multiplespawner.editor.access import CourseRules, editor_from_scopes
from multiplespawner.mounts import server
from multiplespawner.mounts.server import (
    Made,
    MountFailed,
    PlanError,
    mount_all,
    mounts_from_state,
    mounts_to_state,
    plan,
    unmount_all,
)
from multiplespawner.mounts.sshfs import Mount, MountError, SFTPSource
from multiplespawner.spawner import MultipleSpawner

HOST_KEY = "[storage.example.org]:22 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
SECRET_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LWtleS1ib2R5\n-----END OPENSSH PRIVATE KEY-----\n"
AUTH_STATE = {"storage_key": SECRET_KEY, "storage_host_key": HOST_KEY}


def a_mount(**over):
    spec = {
        "kind": "sshfs",
        "name": "your ERDA home",
        "source": {"user": "{JUPYTERHUB_USER}", "host": "storage.example.org", "port": 22,
                   "path": "/home/{JUPYTERHUB_USER}"},
        "target": "work",
        "readonly": False,
        "credential": {"from": "auth_state", "key_field": "storage_key", "host_key_field": "storage_host_key"},
    }
    spec.update(over)
    return spec


def catalogue_with(tmp_path, *templates, name="catalogue.json"):
    f = tmp_path / name
    f.write_text(json.dumps({
        "deployments": {"local": [{"name": "hub", "provider": "local"}],
                        "container": [{"name": "here", "provider": "docker", "image": "nb:1"}]},
        "templates": list(templates),
    }))
    return f


def container(name="box", **over):
    spec = {"name": name, "resource_type": "container", "providers": ["docker"],
            "spawner": {"class": "dockerspawner.DockerSpawner", "kwargs": {"image": "{DEPLOYMENT_IMAGE}"}}}
    spec.update(over)
    return spec


# -- the catalogue ---------------------------------------------------------------------------
def test_a_container_template_with_mounts_loads(tmp_path):
    f = catalogue_with(tmp_path, container(mounts=[a_mount(), a_mount(name="data", target="data/course",
                                                                      readonly=True, required=False)]))
    assert len(load_catalogue([f]).templates["box"].spec["mounts"]) == 2


@pytest.mark.parametrize("mount, path, words", [
    (a_mount(kind="nfs"), "/mounts/0/kind", "'nfs' is not one of ['sshfs']"),
    (a_mount(extra=1), "/mounts/0", "Additional properties are not allowed ('extra' was unexpected)"),
    (a_mount(name="x" * 101), "/mounts/0/name", "is too long"),
    (a_mount(name="two\nlines"), "/mounts/0/name", "does not match"),
    (a_mount(source={"user": "a", "host": "h", "port": 0}), "/mounts/0/source/port", "less than the minimum"),
    (a_mount(source={"user": "a", "host": "h", "key": "x"}), "/mounts/0/source", "'key' was unexpected"),
    (a_mount(source={"user": "a", "host": "-oProxyCommand=x"}), "/mounts/0/source/host", "does not match"),
    (a_mount(credential={"from": "file", "key_field": "k", "host_key_field": "h"}),
     "/mounts/0/credential/from", "'file' is not one of ['auth_state']"),
    (a_mount(credential={"from": "auth_state", "key_field": "k"}), "/mounts/0/credential",
     "'host_key_field' is a required property"),
    (a_mount(readonly="yes"), "/mounts/0/readonly", "is not of type 'boolean'"),
    (a_mount(target="w" * 201), "/mounts/0/target", "is too long"),
])
def test_schema_errors_are_catalogue_errors(tmp_path, mount, path, words):
    f = catalogue_with(tmp_path, container(mounts=[mount]))
    with pytest.raises(CatalogueError) as info:
        load_catalogue([f])
    messages = {p.path: p.message for p in info.value.problems}
    assert words in messages[f"/templates/0{path}"], messages


def test_at_most_four_mounts(tmp_path):
    f = catalogue_with(tmp_path, container(mounts=[a_mount(target=f"m{i}") for i in range(5)]))
    with pytest.raises(CatalogueError, match="/templates/0/mounts: .* is too long"):
        load_catalogue([f])


@pytest.mark.parametrize("target", ["/home/jovyan/work", "..", "work/../../etc", "./work", "", "/",
                                    "a:b", "a,b", "tab\there", "back\\slash"])
def test_targets_outside_the_home_are_refused(tmp_path, target):
    f = catalogue_with(tmp_path, container(mounts=[a_mount(target=target)]))
    with pytest.raises(CatalogueError) as info:
        load_catalogue([f])
    [problem] = info.value.problems
    assert problem.path == "/templates/0/mounts/0/target", problem


def test_overlapping_targets_and_unknown_placeholders_are_refused(tmp_path):
    f = catalogue_with(tmp_path, container(mounts=[
        a_mount(), a_mount(target="work/inner"),
        a_mount(target="other", source={"user": "{NOPE}", "host": "h"})]))
    with pytest.raises(CatalogueError) as info:
        load_catalogue([f])
    messages = {p.path: p.message for p in info.value.problems}
    assert "overlaps" in messages["/templates/0/mounts/1/target"]
    assert "unknown placeholder {NOPE}" in messages["/templates/0/mounts/2/source/user"]


# -- the template editor ---------------------------------------------------------------------
TA = editor_from_scopes("ta", ["custom:templates:edit!group=course-a"])
ADMIN = editor_from_scopes("admin", ["custom:templates:edit"])
COURSE = container("a", tags=["course-a"], access={"groups": ["course-a"]})


def test_course_editors_cannot_add_change_or_remove_mounts():
    rules = CourseRules()
    with_mount = {**COURSE, "mounts": [a_mount()]}
    for before, after in [(COURSE, with_mount), (with_mount, {**COURSE, "mounts": [a_mount(readonly=True)]}),
                          (with_mount, COURSE)]:
        reasons = TA.refusals(before, after, rules)
        assert reasons == ["mounts: changing it needs the unrestricted custom:templates:edit permission"], reasons
        assert ADMIN.refusals(before, after, rules) == []
    # a new template: a copy keeps its original's mounts; adding some is no copy
    assert TA.refusals(None, {**with_mount, "name": "a2"}, rules, [with_mount]) == []
    reasons = TA.refusals(None, {**with_mount, "name": "a2"}, rules, [COURSE])
    assert reasons and reasons[0].startswith("a course editor creates a template as a copy"), reasons


# -- the plan --------------------------------------------------------------------------------
VALUES = {"JUPYTERHUB_USER": "ann", "JUPYTERHUB_SERVER_NAME": ""}


def test_plan_resolves_placeholders_and_takes_the_credential_from_auth_state():
    [p] = plan([a_mount()], VALUES, AUTH_STATE)
    assert p.source == SFTPSource("ann", "storage.example.org", 22, "/home/ann")
    assert (p.index, p.name, p.target, p.readonly, p.required, p.problem) == (
        0, "your ERDA home", "work", False, True, None)
    assert p.key_pem == SECRET_KEY and p.known_hosts_line == HOST_KEY
    assert SECRET_KEY not in repr(p) and "AAAAC3" not in repr(p)


@pytest.mark.parametrize("auth_state, entry", [
    (None, "storage_key"),
    ({}, "storage_key"),
    ({"storage_key": SECRET_KEY}, "storage_host_key"),
    ({"storage_key": "", "storage_host_key": HOST_KEY}, "storage_key"),
])
def test_a_missing_auth_state_entry_names_the_entry_and_the_mount(auth_state, entry):
    with pytest.raises(PlanError) as info:
        plan([a_mount()], VALUES, auth_state)
    message = str(info.value)
    assert f"Mount 'your ERDA home': the user's auth_state has no entry {entry!r}" in message


def test_messages_never_carry_auth_state_values():
    bad = {"storage_key": SECRET_KEY, "storage_host_key": "not a host key SECRETVALUE"}
    with pytest.raises(PlanError) as info:
        plan([a_mount()], VALUES, bad)
    assert "'storage_host_key' is not a known_hosts line" in str(info.value)
    assert "SECRETVALUE" not in str(info.value) and "c2VjcmV0" not in str(info.value)


def test_a_mount_that_is_not_required_is_planned_with_its_problem():
    [ok, missing] = plan([a_mount(), a_mount(name="extra", target="extra", required=False,
                                             credential={"from": "auth_state", "key_field": "other",
                                                         "host_key_field": "storage_host_key"})],
                         VALUES, AUTH_STATE)
    assert ok.problem is None
    assert missing.source is None and missing.key_pem == "" and "no entry 'other'" in missing.problem


def test_a_user_name_that_is_no_sftp_login_is_a_plan_error():
    with pytest.raises(PlanError, match="Mount 'your ERDA home': SFTP source user must be"):
        plan([a_mount()], {**VALUES, "JUPYTERHUB_USER": "ann@example.org"}, AUTH_STATE)


# -- mount_all / unmount_all with a stand-in for sshfs.mount ---------------------------------
class FakeMounts:
    def __init__(self, fail=()):
        self.fail, self.made, self.unmounted = set(fail), [], []

    async def mount(self, source, target, **kwargs):
        if Path(target).name in self.fail:
            raise MountError(f"mounting {source} on {target} failed: connection refused")
        m = Mount(source=source, target=Path(target), marker=kwargs["marker"])
        outer = self

        async def unmount(timeout=10):
            outer.unmounted.append(m.marker)

        m.unmount = unmount
        self.made.append((m.marker, kwargs))
        return m


@pytest.fixture
def fake(monkeypatch):
    def make(fail=()):
        f = FakeMounts(fail)
        monkeypatch.setattr(server, "mount", f.mount)
        return f
    return make


async def test_mount_all_mounts_in_order_and_reports_progress(fake, tmp_path):
    f = fake()
    events = []
    planned = plan([a_mount(), a_mount(name="data", target="data", readonly=True)], VALUES, AUTH_STATE)
    made = await mount_all(planned, tmp_path / "srv", "ms-x-", 1000, 100, events.append)
    assert [m.host_path for m in made] == [tmp_path / "srv" / "0", tmp_path / "srv" / "1"]
    assert [marker for marker, _ in f.made] == ["ms-x-0", "ms-x-1"]
    assert all(k["uid"] == 1000 and k["gid"] == 100 and k["allow_other"] for _, k in f.made)
    assert [k["readonly"] for _, k in f.made] == [False, True]
    assert events == ["Mounting your ERDA home ...", "Mounting your ERDA home ... done",
                      "Mounting data ...", "Mounting data ... done"]
    assert oct((tmp_path / "srv").stat().st_mode & 0o777) == "0o700"
    state = json.loads(json.dumps(mounts_to_state(made, tmp_path / "srv")))
    restored, server_dir = mounts_from_state(state)
    assert server_dir == tmp_path / "srv" and [(m.index, m.name, m.target, m.readonly) for m in restored] == [
        (0, "your ERDA home", "work", False), (1, "data", "data", True)]
    assert await unmount_all(made, tmp_path / "srv") == []
    assert f.unmounted == ["ms-x-1", "ms-x-0"] and not (tmp_path / "srv").exists()


async def test_a_required_mount_that_fails_undoes_the_others(fake, tmp_path):
    f = fake(fail={"1"})
    events = []
    planned = plan([a_mount(), a_mount(name="data", target="data")], VALUES, AUTH_STATE)
    with pytest.raises(MountFailed) as info:
        await mount_all(planned, tmp_path / "srv", "ms-x-", 1000, 100, events.append)
    assert str(info.value) == "Mounting data failed: connection refused"
    assert events[-1] == "Mounting data ... failed: connection refused"
    assert f.unmounted == ["ms-x-0"] and not (tmp_path / "srv").exists()


async def test_a_mount_that_is_not_required_and_fails_is_skipped(fake, tmp_path):
    fake(fail={"0"})
    events = []
    planned = plan([a_mount(required=False), a_mount(name="data", target="data")], VALUES, AUTH_STATE)
    made = await mount_all(planned, tmp_path / "srv", "ms-x-", 1000, 100, events.append)
    assert [m.name for m in made] == ["data"]
    assert "Mounting your ERDA home ... failed: connection refused; the server starts without it" in events


# -- the Docker adapter and MultipleSpawner --------------------------------------------------
def test_the_docker_adapter_adds_bind_volumes():
    child = DockerSpawner(volumes={"/srv/shared": "/home/jovyan/shared"},
                          user=SimpleNamespace(name="ann", id=1, url="/user/ann/"))
    adapter = adapter_for(DockerSpawner)
    assert adapter.supports_mounts and not adapter_for(MultipleSpawner).supports_mounts
    adapter.bind_mounts(child, [("/run/m/abc/0", "work", False), ("/run/m/abc/1", "a{b}", True)], "/home/jovyan/")
    assert child.volumes == {"/srv/shared": "/home/jovyan/shared",
                             "/run/m/abc/0": {"bind": "/home/jovyan/work", "mode": "rw"},
                             "/run/m/abc/1": {"bind": "/home/jovyan/a{{b}}", "mode": "ro"}}
    assert child.volume_binds["/run/m/abc/1"] == {"bind": "/home/jovyan/a{b}", "mode": "ro"}


def _spawner(**config) -> MultipleSpawner:
    user = SimpleNamespace(name="ann", admin=False, groups=[])
    return MultipleSpawner(user=user, **config)


async def test_other_resource_types_with_mounts_are_refused_before_anything_is_built(tmp_path):
    local = {"name": "here", "resource_type": "local", "providers": ["local"], "mounts": [a_mount()],
             "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner"}}
    spawner = _spawner(catalogue_paths=[str(catalogue_with(tmp_path, local))])
    with pytest.raises(SpawnException) as e:
        await spawner.prepare({"template": "here"})
    assert e.value.status_code == 400
    assert e.value.message == "Template 'here' cannot be used: mounts are supported for container templates only so far"
    assert spawner.child is None and spawner._record is None


async def test_templates_without_mounts_have_no_mount_state(tmp_path):
    spawner = _spawner(catalogue_paths=[str(catalogue_with(tmp_path, container()))])
    await spawner.prepare({"template": "box"})
    assert spawner._mount_input is None and "mounts" not in spawner.get_state()
    spawner = _spawner(catalogue_paths=[str(catalogue_with(tmp_path, container(mounts=[a_mount()]), name="b.json"))])
    await spawner.prepare({"template": "box"})
    assert spawner._mount_input[0] == [a_mount()] and "mounts" not in spawner.get_state()


def test_mounts_in_the_state_survive_a_restart():
    made = [Made(0, "your ERDA home", "work", False,
                 Mount(SFTPSource("ann", "storage.example.org", 22, "/home/ann"), Path("/run/m/abc/0"), "ms-abc-0",
                       private_dir=Path("/tmp/sshfs-ms-abc-0-x"), agent_pid=11, sshfs_pid=12))]
    state = {"mounts": mounts_to_state(made, "/run/m/abc")}
    spawner = _spawner()
    spawner.load_state(json.loads(json.dumps(state)))
    assert spawner._mounts_dir == Path("/run/m/abc") and spawner._mounts[0].mount.sshfs_pid == 12
    assert spawner.get_state()["mounts"] == state["mounts"]
