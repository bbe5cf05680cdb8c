"""The template editor service behind a real hub: RBAC, ETag conflicts, validation, hot reload."""

import threading

import pytest
import requests
import yaml

from multiplespawner.catalogue import load_catalogue
from tests.fixtures.editor import editor_hub_config, local_template, write_catalogue
from tests.fixtures.procs import wait_until


@pytest.fixture
def editor_hub(hub_factory, tmp_path):
    catalogue = tmp_path / "catalogue"
    write_catalogue(catalogue)
    hub = hub_factory(editor_hub_config(catalogue))
    hub.create_user("boss", groups=["admins"])
    hub.create_user("ta", groups=["course-a-tas"])
    hub.create_user("student", groups=["course-a"])
    base = f"{hub.url}/services/templates/"
    wait_until(lambda: requests.get(base + "api/templates", timeout=2, allow_redirects=False).status_code == 302,
               timeout=60, message="editor service up")

    def token(user):
        r = hub.api("POST", f"/users/{user}/tokens", json={"note": "editor test"})
        r.raise_for_status()
        return r.json()["token"]

    def call(user_token, method, path, **kw):
        headers = {"Authorization": f"token {user_token}", **kw.pop("headers", {})}
        return requests.request(method, base + "api/" + path, headers=headers, timeout=30, **kw)

    return hub, catalogue, token, call


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


def test_invalid_edit_refused_with_schema_error(editor_hub):
    hub, catalogue, token, call = editor_hub
    ta = token("ta")
    before = (catalogue / "courses.yaml").read_bytes()
    etag = call(ta, "GET", "templates/course-a-lab").json()["etag"]
    bad = yaml.safe_dump({**local_template("course-a-lab", tags=["course-a"]),
                          "resources": {"memory_mb": {"default": 9000, "max": 1024}}})
    r = call(ta, "PUT", "templates/course-a-lab", data=bad,
             headers={"If-Match": etag, "Content-Type": "application/yaml"})
    assert r.status_code == 400
    assert any("default 9000 is above max 1024" in p for p in r.json()["problems"])
    r = call(ta, "PUT", "templates/course-a-lab", data="{not: [valid", headers={
        "If-Match": etag, "Content-Type": "application/yaml"})
    assert r.status_code == 400 and "not valid YAML" in r.json()["message"]
    r = call(ta, "PUT", "templates/course-a-lab", json=local_template("course-a-lab", tags=["course-a"]))
    assert r.status_code == 428  # no If-Match: refused rather than risking a lost update
    assert (catalogue / "courses.yaml").read_bytes() == before
    assert "course-a-lab" in load_catalogue([catalogue]).templates


def test_cli_through_the_service(editor_hub, tmp_path):
    """The CLI applies a file through the service with the TA's token (from the environment)."""
    import os
    import subprocess
    import sys

    hub, catalogue, token, call = editor_hub
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump([local_template("course-a-lab", tags=["course-a"], memory_max=3072)]))
    theirs = tmp_path / "theirs.yaml"
    theirs.write_text(yaml.safe_dump([local_template("course-b-lab", tags=["course-b"], memory_max=8)]))
    env = {**os.environ, "JUPYTERHUB_API_TOKEN": token("ta")}
    cli = [sys.executable, "-m", "multiplespawner.editor.cli", "--url", f"{hub.url}/services/templates/"]

    out = subprocess.run(cli + ["apply", str(mine)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "course-a-lab: updated" in out.stdout
    assert load_catalogue([catalogue]).templates["course-a-lab"].resources["memory_mb"].max == 3072
    out = subprocess.run(cli + ["apply", str(theirs)], env=env, capture_output=True, text=True)
    assert out.returncode == 1 and "refused" in out.stdout
    assert env["JUPYTERHUB_API_TOKEN"] not in out.stdout + out.stderr
    history = call(token("boss"), "GET", "history").json()["history"]
    assert [(h["actor"], h["template"]) for h in history] == [("ta", "course-a-lab")]
