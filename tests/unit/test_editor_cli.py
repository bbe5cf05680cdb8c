"""multiplespawner-templates on a catalogue directory: list, show, validate, diff, apply."""

import json

import yaml

from multiplespawner.editor.cli import main
from multiplespawner.editor.store import TemplateStore
from tests.fixtures.editor import local_template, write_catalogue


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_show(tmp_path, capsys):
    write_catalogue(tmp_path)
    code, out, _ = run(capsys, "--catalogue-dir", str(tmp_path), "list")
    assert code == 0 and "course-a-lab" in out and "course-b-lab" in out
    code, out, _ = run(capsys, "--catalogue-dir", str(tmp_path), "show", "course-a-lab")
    assert code == 0 and yaml.safe_load(out)["tags"] == ["course-a"]
    code, _, err = run(capsys, "--catalogue-dir", str(tmp_path), "show", "nope")
    assert code == 1 and "no template named 'nope'" in err


def test_validate_diff_apply(tmp_path, capsys):
    cat = tmp_path / "cat"
    write_catalogue(cat)
    changed = local_template("course-a-lab", tags=["course-a"], memory_max=4096)
    new = local_template("fresh", tags=["course-c"])
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"templates": [changed, new]}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**new, "resources": {"memory_mb": {"default": 1, "max": 0}}}))

    code, out, _ = run(capsys, "--catalogue-dir", str(cat), "validate", str(good))
    assert code == 0 and "course-a-lab: ok" in out and "fresh: ok" in out
    code, out, _ = run(capsys, "--catalogue-dir", str(cat), "validate", str(bad))
    assert code == 1 and "fresh: INVALID" in out and "max" in out

    code, out, _ = run(capsys, "--catalogue-dir", str(cat), "diff", str(good))
    assert "-    max: 1024" in out and "+    max: 4096" in out and "/dev/null" in out

    code, out, _ = run(capsys, "--catalogue-dir", str(cat), "--actor", "ops", "apply", str(good))
    assert code == 0 and "course-a-lab: updated" in out and "fresh: created" in out
    code, out, _ = run(capsys, "--catalogue-dir", str(cat), "apply", str(good))
    assert code == 0 and "course-a-lab: unchanged" in out and "fresh: unchanged" in out
    code, out, _ = run(capsys, "--catalogue-dir", str(cat), "apply", str(bad))
    assert code == 1 and "refused" in out
    assert [h["actor"] for h in TemplateStore(cat).history()] == ["ops", "ops"]


def test_token_never_from_argv(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    code, _, err = run(capsys, "--url", "http://127.0.0.1:9/services/templates/", "list")
    assert code == 2 and "JUPYTERHUB_API_TOKEN" in err


def test_show_apply_round_trip_detects_an_edit_made_in_between(tmp_path, capsys):
    """``show NAME > FILE``, edit, ``apply FILE``: a change someone made meanwhile is not lost."""
    cat = tmp_path / "cat"
    write_catalogue(cat)
    store = TemplateStore(cat)
    code, shown, _ = run(capsys, "--catalogue-dir", str(cat), "show", "course-a-lab")
    assert code == 0 and shown.startswith(f"# etag course-a-lab: {store.get('course-a-lab').etag} ")
    mine = tmp_path / "mine.yaml"
    mine.write_text(shown.replace("max: 1024", "max: 4096"))

    # meanwhile a TA changes the description in the browser
    theirs = {**store.get("course-a-lab").spec, "description": "TA's edit"}
    store.put("course-a-lab", theirs, store.get("course-a-lab").etag, actor="ta")

    code, out, _ = run(capsys, "--catalogue-dir", str(cat), "diff", str(mine))
    assert code == 0 and "course-a-lab changed since this file was made" in out
    code, out, _ = run(capsys, "--catalogue-dir", str(cat), "--actor", "ops", "apply", str(mine))
    assert code == 3 and "course-a-lab: refused: template 'course-a-lab' was changed by someone else" in out
    assert store.get("course-a-lab").spec == theirs
    assert [h["actor"] for h in store.history()] == ["ta"]

    # made again from the live version, the same edit goes through and keeps the TA's change
    code, shown, _ = run(capsys, "--catalogue-dir", str(cat), "show", "course-a-lab")
    mine.write_text(shown.replace("max: 1024", "max: 4096"))
    code, out, _ = run(capsys, "--catalogue-dir", str(cat), "--actor", "ops", "apply", str(mine))
    assert code == 0 and "course-a-lab: updated" in out
    live = store.get("course-a-lab").spec
    assert live["description"] == "TA's edit" and live["resources"]["memory_mb"]["max"] == 4096


def test_apply_of_a_file_made_from_a_deleted_template_is_a_conflict(tmp_path, capsys):
    cat = tmp_path / "cat"
    write_catalogue(cat)
    store = TemplateStore(cat)
    _, shown, _ = run(capsys, "--catalogue-dir", str(cat), "show", "course-b-lab")
    store.delete("course-b-lab", store.get("course-b-lab").etag, actor="boss")
    old = tmp_path / "old.yaml"
    old.write_text(shown)
    code, out, _ = run(capsys, "--catalogue-dir", str(cat), "apply", str(old))
    assert code == 3 and "it has been deleted" in out
    assert [e.name for e in store.list()] == ["course-a-lab"]


def test_connection_and_file_problems_exit_2(tmp_path, capsys, monkeypatch):
    from tests.fixtures.net import free_port

    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "not-a-real-token")
    code, _, err = run(capsys, "--url", f"http://127.0.0.1:{free_port()}/services/templates/", "list")
    assert code == 2 and "Connection refused" in err
    write_catalogue(tmp_path)
    code, _, err = run(capsys, "--catalogue-dir", str(tmp_path), "apply", str(tmp_path / "missing.yaml"))
    assert code == 2 and "missing.yaml" in err


def test_hostile_files_are_refused_with_a_message(tmp_path, capsys):
    """Every command reading FILE exits 1 with a message (never a traceback) for an alias bomb,
    deep nesting, non-UTF-8, non-plain data, a name that is not a name, an oversized file;
    nothing is written."""
    from tests.fixtures.editor import alias_bomb

    cat = tmp_path / "cat"
    write_catalogue(cat)
    before = {p.name: p.read_bytes() for p in cat.iterdir()}
    files = {
        "bomb.yaml": alias_bomb(9).encode(),
        "deep.json": b"[" * 100000,
        "deep.yaml": b"[" * 100000,
        "binary.yaml": b"name: \xff\xfe",
        "date.yaml": b"- name: x\n  when: 2024-01-01\n",
        "listname.yaml": b"- name: [a, b]\n",
        "newline.json": json.dumps([local_template("evil\n")]).encode(),
        "big.yaml": b"#" * 5000,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        for command in ("validate", "diff", "apply"):
            code, out, err = run(capsys, "--catalogue-dir", str(cat), "--max-bytes", "4096", command, str(tmp_path / name))
            assert code == 1 and "error: " in err and "Traceback" not in err + out, (name, command, err)
    assert {p.name: p.read_bytes() for p in cat.iterdir()} == before


def test_directory_mode_applies_the_allow_list(tmp_path, capsys):
    cat = tmp_path / "cat"
    write_catalogue(cat)
    simple = tmp_path / "simple.yaml"
    simple.write_text(yaml.safe_dump([{**local_template("course-a-lab", tags=["course-a"]),
                                       "spawner": {"class": "jupyterhub.spawner.SimpleLocalProcessSpawner"}}]))
    code, out, _ = run(capsys, "--catalogue-dir", str(cat), "apply", str(simple))
    assert code == 1 and "allowed_spawner_classes" in out
    # the option replaces the default list, as the traits do
    code, out, _ = run(capsys, "--catalogue-dir", str(cat), "--allowed-spawner-class",
                       "jupyterhub.spawner.SimpleLocalProcessSpawner", "apply", str(simple))
    assert code == 1 and "'jupyterhub.spawner.LocalProcessSpawner' is not allowed" in out
    code, out, _ = run(capsys, "--catalogue-dir", str(cat),
                       "--allowed-spawner-class", "jupyterhub.spawner.SimpleLocalProcessSpawner",
                       "--allowed-spawner-class", "jupyterhub.spawner.LocalProcessSpawner", "apply", str(simple))
    assert code == 0 and out == "course-a-lab: updated\n"
