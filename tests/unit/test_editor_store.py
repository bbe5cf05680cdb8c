"""TemplateStore: ETag conflicts, validation before write, atomic files, history."""

import json
import threading

import pytest
import yaml

from multiplespawner.catalogue import CatalogueError, load_catalogue
from multiplespawner.editor.store import Conflict, Forbidden, NotFound, TemplateStore, etag_of

DEPLOYMENTS = {"deployments": {"local": [{"name": "hub-host", "provider": "local"}]}}


def template(name, **extra):
    spec = {
        "name": name,
        "resource_type": "local",
        "providers": ["local"],
        "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner", "kwargs": {}},
        "resources": {"memory_mb": {"default": 512, "min": 256, "max": 1024}},
    }
    spec.update(extra)
    return spec


@pytest.fixture
def catalogue_dir(tmp_path):
    d = tmp_path / "catalogue"
    d.mkdir()
    (d / "00-deployments.yaml").write_text(yaml.safe_dump(DEPLOYMENTS))
    # a thesis-format file holding two templates: edits must keep the other one intact
    (d / "templates.json").write_text(json.dumps([template("alpha"), template("beta")]))
    return d


def test_list_and_get(catalogue_dir):
    store = TemplateStore(catalogue_dir)
    assert [e.name for e in store.list()] == ["alpha", "beta"]
    entry = store.get("beta")
    assert entry.file.name == "templates.json" and entry.index == 1
    assert entry.etag == etag_of(template("beta"))
    with pytest.raises(NotFound):
        store.get("gamma")


def test_update_in_place_keeps_neighbours_and_format(catalogue_dir):
    store = TemplateStore(catalogue_dir)
    beta = store.get("beta")
    new = template("beta", description="bigger", resources={"memory_mb": {"default": 512, "max": 2048}})
    saved = store.put("beta", new, beta.etag, actor="ta1")
    assert saved.etag == etag_of(new) != beta.etag
    on_disk = json.loads((catalogue_dir / "templates.json").read_text())
    assert on_disk == [template("alpha"), new]
    assert load_catalogue([catalogue_dir]).templates["beta"].spec == new


def test_create_goes_to_its_own_yaml_file(catalogue_dir):
    store = TemplateStore(catalogue_dir)
    store.put("gamma", template("gamma"), None, actor="ta1")
    assert yaml.safe_load((catalogue_dir / "gamma.yaml").read_text()) == [template("gamma")]
    with pytest.raises(Conflict):  # creating again is a conflict, not an overwrite
        store.put("gamma", template("gamma"), None, actor="ta2")


def test_stale_etag_is_a_conflict_and_nothing_is_lost(catalogue_dir):
    store = TemplateStore(catalogue_dir)
    read_by_both = store.get("alpha").etag
    first = template("alpha", description="first edit")
    store.put("alpha", first, read_by_both, actor="ta1")
    with pytest.raises(Conflict) as err:
        store.put("alpha", template("alpha", description="second edit"), read_by_both, actor="ta2")
    assert err.value.current_etag == etag_of(first)
    assert store.get("alpha").spec == first


def test_concurrent_writers_one_wins_per_version(catalogue_dir):
    """Many threads (as the service and the CLI would be) race on the same version."""
    store = TemplateStore(catalogue_dir)
    etag = store.get("alpha").etag
    results = []

    def edit(i):
        try:
            TemplateStore(catalogue_dir).put("alpha", template("alpha", description=f"edit {i}"), etag, f"u{i}")
            results.append("ok")
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=edit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict"] * 7 + ["ok"]
    assert len(store.history("alpha")) == 1


def test_invalid_edit_is_refused_and_files_unchanged(catalogue_dir):
    store = TemplateStore(catalogue_dir)
    before = {p.name: p.read_bytes() for p in catalogue_dir.iterdir()}
    alpha = store.get("alpha")
    bad = template("alpha", resources={"memory_mb": {"default": 4096, "max": 1024}})
    with pytest.raises(CatalogueError) as err:
        store.put("alpha", bad, alpha.etag, actor="ta1")
    assert "default 4096 is above max 1024" in str(err.value)
    with pytest.raises(CatalogueError) as err:
        store.put("alpha", {**template("alpha"), "providers": ["nowhere"]}, alpha.etag, actor="ta1")
    assert "no local deployment has provider 'nowhere'" in str(err.value)
    with pytest.raises(CatalogueError) as err:
        store.put("alpha", {**template("alpha"), "colour": "red"}, alpha.etag, actor="ta1")
    assert "templates.json" in str(err.value) and "colour" in str(err.value)
    after = {p.name: p.read_bytes() for p in catalogue_dir.iterdir() if not p.name.startswith(".")}
    assert after == {k: v for k, v in before.items()}
    assert store.history() == []


def test_name_must_match(catalogue_dir):
    store = TemplateStore(catalogue_dir)
    with pytest.raises(CatalogueError):
        store.put("alpha", template("other"), store.get("alpha").etag, actor="x")


def test_delete_and_history(catalogue_dir):
    store = TemplateStore(catalogue_dir)
    alpha = store.get("alpha")
    store.put("alpha", template("alpha", enabled=False), alpha.etag, actor="ta1")
    store.delete("beta", store.get("beta").etag, actor="ta2")
    assert [e.name for e in store.list()] == ["alpha"]
    history = store.history()
    assert [(h["action"], h["template"], h["actor"]) for h in history] == [
        ("delete", "beta", "ta2"), ("update", "alpha", "ta1")]
    assert "+enabled: false" in history[1]["diff"]
    with pytest.raises(Conflict):
        store.delete("beta", "whatever", actor="ta2")


def test_no_temp_files_left_behind(catalogue_dir):
    store = TemplateStore(catalogue_dir)
    store.put("alpha", template("alpha", description="x"), store.get("alpha").etag, actor="a")
    leftovers = [p.name for p in catalogue_dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def _lock_held(directory) -> bool:
    """Is the store's write lock held (by anyone)? A second open file description's
    non-blocking flock fails while another holds it, also within one process."""
    import fcntl

    with open(directory / ".catalogue.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def test_validation_runs_outside_the_write_lock(catalogue_dir, monkeypatch):
    """A slow (or hostile) validation must not block every other writer."""
    store = TemplateStore(catalogue_dir)
    real_check, held = store._check, []
    monkeypatch.setattr(store, "_check", lambda files: (held.append(_lock_held(catalogue_dir)), real_check(files))[1])
    store.put("gamma", template("gamma"), None, "ops")
    store.put("gamma", template("gamma", description="x"), store.get("gamma").etag, "ops")
    store.delete("gamma", store.get("gamma").etag, "ops")
    assert held == [False, False, False]


def test_a_write_between_validation_and_lock_is_validated_again(catalogue_dir, monkeypatch):
    """The version and the permission are checked again under the lock, on the files as they
    are then: an edit that slipped in after validation is neither overwritten nor trusted."""
    store = TemplateStore(catalogue_dir)
    other = TemplateStore(catalogue_dir)
    etag = store.get("alpha").etag
    real_check, calls = store._check, []

    def check_then_someone_writes(files):
        real_check(files)
        calls.append(1)
        if len(calls) == 1:  # another writer moves alpha to another course meanwhile
            other.put("alpha", template("alpha", tags=["course-b"]), etag, "boss")

    monkeypatch.setattr(store, "_check", check_then_someone_writes)
    seen = []

    def authorize(current, spec, existing):
        seen.append((_lock_held(catalogue_dir), (current or {}).get("tags")))
        return [] if "course-b" not in (current or {}).get("tags", []) else ["not your course"]

    with pytest.raises(Conflict):
        store.put("alpha", template("alpha", description="mine"), etag, "ta", authorize)
    assert load_catalogue([catalogue_dir]).templates["alpha"].spec["tags"] == ["course-b"]
    assert len(calls) == 1 and seen == [(False, None)]  # validated once; under the lock: stale
    # with the new version, the permission check sees the template as it is now
    seen.clear()
    with pytest.raises(Forbidden, match="not your course"):
        store.put("alpha", template("alpha", description="mine"), store.get("alpha").etag, "ta", authorize)
    assert seen == [(False, ["course-b"])]
    # a write that goes through asks again under the lock, with the template as it is then
    seen.clear()
    store.put("beta", template("beta", description="x"), store.get("beta").etag, "ta", authorize)
    assert seen == [(False, None), (True, None)]


def test_a_broken_file_is_reported_not_raised(catalogue_dir):
    (catalogue_dir / "zz-broken.yaml").write_text("a: &x 1\nb: *x\n")
    store = TemplateStore(catalogue_dir)
    assert [e.name for e in store.list()] == ["alpha", "beta"]
    with pytest.raises(CatalogueError, match=r"zz-broken.yaml: at /: not valid YAML: .*aliases"):
        store.put("gamma", template("gamma"), None, "ops")
    assert not (catalogue_dir / "gamma.yaml").exists()
