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
