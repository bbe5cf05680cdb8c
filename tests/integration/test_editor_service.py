"""The template editor service behind a real hub: RBAC, ETag conflicts, validation, hot reload."""

import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest
import yaml

from multiplespawner.catalogue import load_catalogue
from multiplespawner.editor.cli import main as cli_main
from tests.fixtures.editor import hub_session, local_template, start_editor_hub


@pytest.fixture
def editor_hub(hub_factory, tmp_path):
    e = start_editor_hub(hub_factory, tmp_path)
    return e.hub, e.catalogue, e.token, e.call


def test_roles_decide_who_edits_what(editor_hub):
    hub, catalogue, token, call = editor_hub
    boss, ta, student = token("boss"), token("ta"), token("student")

    r = call(student, "GET", "templates")
    assert r.status_code == 403 and "custom:templates:edit" in r.json()["message"]

    listing = {t["name"]: t for t in call(ta, "GET", "templates").json()["templates"]}
    assert listing["course-a-lab"]["editable"] and not listing["course-b-lab"]["editable"]

    a = call(ta, "GET", "templates/course-a-lab").json()
    bigger = local_template("course-a-lab", tags=["course-a"], groups=["course-a"], memory_max=2048)
    r = call(ta, "PUT", "templates/course-a-lab", json=bigger, headers={"If-Match": a["etag"]})
    assert r.status_code == 200, r.text

    b = call(ta, "GET", "templates/course-b-lab").json()
    r = call(ta, "PUT", "templates/course-b-lab", json=local_template("course-b-lab", tags=["course-b"], memory_max=64),
             headers={"If-Match": b["etag"]})
    assert r.status_code == 403
    r = call(ta, "POST", "templates", json=local_template("untagged"))
    assert r.status_code == 403 and "tag" in r.json()["message"]

    # the unrestricted admin may touch anything, and the history says who did what
    r = call(boss, "POST", "templates", json=local_template("extra"))
    assert r.status_code == 201, r.text
    history = call(boss, "GET", "history").json()["history"]
    assert [(h["actor"], h["action"], h["template"]) for h in history] == [
        ("boss", "create", "extra"), ("ta", "update", "course-a-lab")]

    # MultipleSpawner picks the change up without a restart: course-a members may now ask for 2048
    live = load_catalogue([catalogue]).templates["course-a-lab"]
    assert live.resources["memory_mb"].max == 2048 and live.spec["access"] == {"groups": ["course-a"]}
    r = hub.api("POST", "/users/boss/server", json={"template": "course-a-lab", "memory_mb": 2048})
    assert r.status_code == 400  # boss is not in course-a: the template is not his to use
    assert "course-a-lab" in r.json()["message"]


def test_concurrent_edits_conflict_and_nothing_is_lost(editor_hub):
    hub, catalogue, token, call = editor_hub
    boss, ta = token("boss"), token("ta")
    etag = call(ta, "GET", "templates/course-a-lab").json()["etag"]
    results = {}

    def edit(who, tok, description):
        spec = {**local_template("course-a-lab", tags=["course-a"]), "description": description}
        results[who] = call(tok, "PUT", "templates/course-a-lab", json=spec, headers={"If-Match": etag})

    threads = [threading.Thread(target=edit, args=(w, t, f"edited by {w}")) for w, t in (("boss", boss), ("ta", ta))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results.values())
    assert codes == [200, 409], {w: r.text for w, r in results.items()}
    winner = next(w for w, r in results.items() if r.status_code == 200)
    loser = next(r for r in results.values() if r.status_code == 409)
    assert loser.json()["current_etag"] == results[winner].json()["etag"]
    assert call(ta, "GET", "templates/course-a-lab").json()["spec"]["description"] == f"edited by {winner}"
    # the loser reloads and edits again: both edits survive, in order
    fresh = call(ta, "GET", "templates/course-a-lab").json()
    spec = {**fresh["spec"], "display_name": "second edit"}
    assert call(ta, "PUT", "templates/course-a-lab", json=spec, headers={"If-Match": fresh["etag"]}).status_code == 200
    final = call(ta, "GET", "templates/course-a-lab").json()["spec"]
    assert final["description"] == f"edited by {winner}" and final["display_name"] == "second edit"

    # deleting goes by the same rules: a stale version is a conflict, another course's is refused
    final_etag = call(ta, "GET", "templates/course-a-lab").json()["etag"]
    assert call(ta, "DELETE", "templates/course-a-lab", headers={"If-Match": fresh["etag"]}).status_code == 409
    assert call(ta, "DELETE", "templates/course-a-lab").status_code == 428
    b_etag = call(ta, "GET", "templates/course-b-lab").json()["etag"]
    assert call(ta, "DELETE", "templates/course-b-lab", headers={"If-Match": b_etag}).status_code == 403
    assert call(ta, "DELETE", "templates/course-a-lab", headers={"If-Match": final_etag}).status_code == 204
    assert call(ta, "GET", "templates/course-a-lab").status_code == 404
    assert set(load_catalogue([catalogue]).templates) == {"course-b-lab"}
    history = call(boss, "GET", "history", params={"template": "course-a-lab"}).json()["history"]
    assert [(h["actor"], h["action"]) for h in history] == [("ta", "delete"), ("ta", "update"), (winner, "update")]


def test_invalid_edit_refused_with_schema_error(editor_hub):
    hub, catalogue, token, call = editor_hub
    ta = token("ta")
    before = (catalogue / "courses.yaml").read_bytes()
    etag = call(ta, "GET", "templates/course-a-lab").json()["etag"]
    bad = yaml.safe_dump({**local_template("course-a-lab", tags=["course-a"]),
                          "resources": {"memory_mb": {"default": 2000, "max": 1024}}})
    r = call(ta, "PUT", "templates/course-a-lab", data=bad,
             headers={"If-Match": etag, "Content-Type": "application/yaml"})
    assert r.status_code == 400
    # the file is named inside the catalogue, not by where the server keeps it
    assert r.json()["problems"] == ["courses.yaml: at /0/resources/memory_mb/default: default 2000 is above max 1024"]
    r = call(ta, "PUT", "templates/course-a-lab", data="{not: [valid", headers={
        "If-Match": etag, "Content-Type": "application/yaml"})
    assert r.status_code == 400 and "not valid YAML" in r.json()["message"]
    r = call(ta, "PUT", "templates/course-a-lab", json=local_template("course-a-lab", tags=["course-a"]))
    assert r.status_code == 428  # no If-Match: refused rather than risking a lost update
    assert (catalogue / "courses.yaml").read_bytes() == before
    assert "course-a-lab" in load_catalogue([catalogue]).templates


def test_preview_is_the_spawn_form_a_group_member_sees(editor_hub):
    """api/preview?group=G renders exactly the form the hub shows a member of G, after edits."""
    hub, catalogue, token, call = editor_hub
    boss, ta, student = token("boss"), token("ta"), token("student")

    def preview(group):
        r = call(ta, "GET", "preview", params={"group": group})
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html"), r.text
        return r.text

    assert call(student, "GET", "preview", params={"group": "course-a"}).status_code == 403
    for group in ("", "course-a", "elsewhere"):  # both templates are open to everyone at first
        html = preview(group)
        assert 'id="ms-t-course-a-lab"' in html and 'id="ms-t-course-b-lab"' in html

    # restrict course-a-lab to course-a with more memory; disable course-b-lab
    a = call(ta, "GET", "templates/course-a-lab").json()
    restricted = local_template("course-a-lab", tags=["course-a"], groups=["course-a"], memory_max=2048)
    assert call(ta, "PUT", "templates/course-a-lab", json=restricted,
                headers={"If-Match": a["etag"]}).status_code == 200
    b = call(boss, "GET", "templates/course-b-lab").json()
    assert call(boss, "PUT", "templates/course-b-lab", json={**b["spec"], "enabled": False},
                headers={"If-Match": b["etag"]}).status_code == 200

    member = preview("course-a")
    assert 'id="ms-t-course-a-lab"' in member and 'id="ms-t-course-b-lab"' not in member
    assert 'id="course-a-lab-memory_mb"' in member and 'max="2048"' in member
    for group in ("", "elsewhere"):
        html = preview(group)
        assert "ms-t-course-" not in html and "There is no template you may use" in html

    # the hub's own spawn page for a course-a member holds the very same form
    spawn_page = hub_session(hub, "student").get(f"{hub.url}/hub/spawn", timeout=30)
    assert spawn_page.status_code == 200 and "/hub/spawn" in spawn_page.url, spawn_page.text[:500]
    assert member in spawn_page.text


def _history_time(record) -> float:
    return datetime.strptime(record["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def test_cli_through_the_service(editor_hub, tmp_path, capsys, monkeypatch):
    """Every CLI command against the service API with the TA's token (from the environment):
    output, exit codes (0 done, 1 invalid/refused, 3 conflict), history with who and when.

    The commands run in this process (the CLI is a blocking client, as from a shell); the
    conflict also runs as its own process, to see the real exit status."""
    hub, catalogue, token, call = editor_hub
    ta, boss = token("ta"), token("boss")
    url = f"{hub.url}/services/templates/"

    def cli(*args, user_token=ta):
        monkeypatch.setenv("JUPYTERHUB_API_TOKEN", user_token)
        code = cli_main(["--url", url, *args])
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)

    def write(name, templates):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(templates, sort_keys=False))
        return str(path)

    out = cli("list")
    assert out.returncode == 0, out.stderr
    assert [line.split() for line in out.stdout.splitlines()] == [
        ["course-a-lab", "local", "enabled", "everyone"], ["course-b-lab", "local", "enabled", "everyone"]]
    out = cli("list", user_token=token("student"))
    assert out.returncode == 1 and "custom:templates:edit" in out.stderr

    out = cli("show", "course-a-lab")
    live = call(ta, "GET", "templates/course-a-lab").json()
    assert out.returncode == 0 and yaml.safe_load(out.stdout) == live["spec"]
    assert out.stdout.startswith(f"# etag course-a-lab: {live['etag']} ")
    out = cli("show", "nope")
    assert out.returncode == 1 and "no template named 'nope'" in out.stderr

    mine = write("mine.yaml", [local_template("course-a-lab", tags=["course-a"], memory_max=3072)])
    bad = write("bad.yaml", [{**local_template("course-a-lab", tags=["course-a"]),
                              "resources": {"memory_mb": {"default": 2000, "max": 1024}}}])
    out = cli("validate", mine)
    assert out.returncode == 0 and out.stdout == "course-a-lab: ok\n"
    out = cli("validate", bad)
    assert out.returncode == 1 and "course-a-lab: INVALID" in out.stdout
    assert "default 2000 is above max 1024" in out.stdout
    out = cli("diff", mine)
    assert out.returncode == 0 and "-    max: 1024\n+    max: 3072\n" in out.stdout

    before = (catalogue / "courses.yaml").read_bytes()
    out = cli("apply", bad)
    assert out.returncode == 1 and "course-a-lab: refused" in out.stdout
    assert "default 2000 is above max 1024" in out.stdout
    out = cli("apply", write("theirs.yaml", [local_template("course-b-lab", tags=["course-b"], memory_max=8)]))
    assert out.returncode == 1 and "course-b-lab: refused: you may only edit templates tagged" in out.stdout
    assert (catalogue / "courses.yaml").read_bytes() == before

    started = time.time()
    out = cli("apply", mine)
    finished = time.time()
    assert out.returncode == 0 and out.stdout == "course-a-lab: updated\n", out.stdout + out.stderr
    assert load_catalogue([catalogue]).templates["course-a-lab"].resources["memory_mb"].max == 3072
    assert cli("apply", mine).stdout == "course-a-lab: unchanged\n"

    # show > file, edit, apply: an edit the boss made in between is detected, not overwritten
    shown = tmp_path / "shown.yaml"
    shown.write_text(cli("show", "course-a-lab").stdout.replace("max: 3072", "max: 4096"))
    current = call(boss, "GET", "templates/course-a-lab").json()
    theirs = {**current["spec"], "description": "boss was here"}
    r = call(boss, "PUT", "templates/course-a-lab", json=theirs, headers={"If-Match": current["etag"]})
    assert r.status_code == 200, r.text
    assert "course-a-lab changed since this file was made" in cli("diff", str(shown)).stdout
    env = {**os.environ, "JUPYTERHUB_API_TOKEN": ta}
    out = subprocess.run([sys.executable, "-m", "multiplespawner.editor.cli", "--url", url, "apply", str(shown)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, out.stdout + out.stderr
    assert ta not in out.stdout + out.stderr
    assert "course-a-lab: refused: template 'course-a-lab' was changed by someone else" in out.stdout
    assert call(ta, "GET", "templates/course-a-lab").json()["spec"] == theirs

    history = call(boss, "GET", "history", params={"template": "course-a-lab"}).json()["history"]
    assert [(h["actor"], h["action"]) for h in history] == [("boss", "update"), ("ta", "update")]
    assert int(started) <= _history_time(history[1]) <= finished
    assert _history_time(history[1]) <= _history_time(history[0]) <= time.time()
    assert "-    max: 1024\n+    max: 3072\n" in history[1]["diff"]
    assert "+description: boss was here\n" in history[0]["diff"]
