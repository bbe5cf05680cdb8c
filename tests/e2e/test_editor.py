"""A course admin edits templates in the browser; students see each change at once.

One hub and one browser; each person keeps one page (own context, own cookies) throughout.
Every check waits for a state that differs from the one before the action, so none can pass
on a page that has not caught up yet.
"""

import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import requests
from playwright.sync_api import expect

from multiplespawner.catalogue import load_catalogue
from tests.fixtures.browser import login_in_new_context, screenshot
from tests.fixtures.editor import CATALOGUE_CHECK_INTERVAL, editor_hub_config, write_catalogue
from tests.fixtures.procs import wait_until

NEW_TEMPLATE = """\
name: course-a-extra
display_name: Course A extra
resource_type: local
providers: [local]
tags: [course-a]
resources:
  memory_mb: {default: DEFAULT, max: 1024}
spawner:
  class: jupyterhub.spawner.LocalProcessSpawner
  kwargs: {}
"""
HISTORY_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (\S+) (create|update|delete) (\S+)$")

# columns of the editor's template table
GROUPS, MEMORY, ENABLED = 3, 5, 6


def live(catalogue, name):
    return load_catalogue([catalogue]).templates[name].spec


def open_spawn_form(page, hub):
    """Load the spawn form one catalogue check interval after the last save at the earliest
    (the spawner looks at the files at most that often: "at once" means within it)."""
    time.sleep(CATALOGUE_CHECK_INTERVAL)
    page.goto(f"{hub.url}/hub/spawn")


def history_entry(page, index):
    """(time as epoch seconds, actor, action, template) of the index-th shown history entry."""
    text = page.locator("#history details summary").nth(index).inner_text().strip()
    match = HISTORY_LINE.match(text)
    assert match, text
    when = datetime.strptime(match[1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    return when, match[2], match[3], match[4]


def test_course_admin_edits_students_see_it(hub_factory, unix_user, tmp_path, page, artifacts_dir):
    catalogue = tmp_path / "catalogue"
    write_catalogue(catalogue)
    hub = hub_factory(editor_hub_config(catalogue))
    student_in = unix_user("stin")
    hub.create_user("ta", groups=["course-a-tas"])
    hub.create_user("boss", groups=["admins"])
    hub.create_user(student_in, groups=["course-a"])
    hub.create_user("outsider")
    editor_url = f"{hub.url}/services/templates/"
    wait_until(lambda: requests.get(editor_url, timeout=2, allow_redirects=False).status_code == 302,
               60, message="editor up")
    browser = page.context.browser

    # before any edit course-a-lab is open to everyone, the outsider included
    outsider = login_in_new_context(browser, hub, "outsider")
    open_spawn_form(outsider, hub)
    expect(outsider.locator("#ms-t-course-a-lab")).to_have_count(1)
    expect(outsider.locator("#ms-t-course-b-lab")).to_have_count(1)

    ta = login_in_new_context(browser, hub, "ta")
    ta.goto(editor_url)
    a_row = ta.locator('tr[data-template="course-a-lab"]')
    a_cells = a_row.locator("td")
    expect(a_cells.nth(GROUPS)).to_have_text("everyone")
    expect(a_cells.nth(MEMORY)).to_have_text("512 (max 1024)")
    expect(ta.locator('tr[data-template="course-b-lab"]')).to_have_count(1)
    assert ta.locator('tr[data-template="course-b-lab"] button').count() == 0  # course-b is not hers
    message, problems = ta.locator("#message"), ta.locator("#problems li")

    # create a template in the YAML view: syntax and schema errors are shown inline, nothing saved
    ta.click("#new-template")
    expect(ta.locator("#yaml-view")).to_be_visible()
    ta.fill("#yaml-text", "name: [unclosed")
    ta.click("#validate")
    expect(problems).to_contain_text(["the body is not valid YAML"])
    ta.fill("#yaml-text", NEW_TEMPLATE.replace("DEFAULT", "2000"))
    ta.click("#validate")
    expect(message).to_have_text("The template has problems.")
    expect(problems).to_have_text(["course-a-extra.yaml: at /0/resources/memory_mb/default: "
                                   "default 2000 is above max 1024"])
    ta.click("#save")
    expect(message).to_have_text("the template is not valid; nothing was saved")
    expect(message).to_have_class(re.compile("alert-danger"))
    expect(problems).to_contain_text(["default 2000 is above max 1024"])
    screenshot(ta, "editor-yaml-schema-error", artifacts_dir)
    assert not (catalogue / "course-a-extra.yaml").exists()
    ta.fill("#yaml-text", NEW_TEMPLATE.replace("DEFAULT", "512"))
    ta.click("#save")
    expect(message).to_have_text(re.compile("^Saved course-a-extra: "))
    expect(problems).to_have_count(0)
    expect(ta.locator('tr[data-template="course-a-extra"] td').nth(MEMORY)).to_have_text("512 (max 1024)")
    expect(ta.locator("#editing-name")).to_have_text("course-a-extra")
    assert live(catalogue, "course-a-extra")["resources"]["memory_mb"] == {"default": 512, "max": 1024}

    # the must-show edit: raise the memory limit and restrict the template to course-a
    a_row.locator("button.edit").click()
    expect(ta.locator("#editing-name")).to_have_text("course-a-lab")
    ta.fill("#field-memory_mb-max", "2048")
    ta.fill("#field-access-groups", "course-a")
    saved_from = int(time.time())
    ta.click("#save")
    expect(message).to_have_text(re.compile("^Saved course-a-lab: "))
    expect(a_cells.nth(GROUPS)).to_have_text("course-a")
    expect(a_cells.nth(MEMORY)).to_have_text("512 (max 2048)")
    spec = live(catalogue, "course-a-lab")
    assert spec["resources"]["memory_mb"]["max"] == 2048 and spec["access"] == {"groups": ["course-a"]}
    screenshot(ta, "editor-after-save", artifacts_dir)

    # its history: who, when, what diff (the panel shows the edited template's history)
    expect(ta.locator("#history details summary")).to_have_text([re.compile(" ta update course-a-lab$")])
    when, actor, action, name = history_entry(ta, 0)
    assert (actor, action, name) == ("ta", "update", "course-a-lab")
    assert saved_from <= when <= time.time()
    ta.locator("#history details summary").first.click()
    diff = ta.locator("#history pre.diff").first
    expect(diff).to_be_visible()
    for line in ("-    max: 1024", "+    max: 2048", "+access:", "+  - course-a"):
        expect(diff).to_contain_text(line)

    # preview the spawn form as a course-a member sees it, then as someone outside the group
    ta.fill("#preview-group", "course-a")
    ta.click("#preview")
    expect(ta.locator("#preview-output #course-a-lab-memory_mb")).to_have_attribute("max", "2048")
    ta.fill("#preview-group", "elsewhere")
    ta.click("#preview")
    expect(ta.locator("#preview-output #ms-t-course-a-lab")).to_have_count(0)
    expect(ta.locator("#preview-output #ms-t-course-a-extra")).to_have_count(1)

    # a student in the group sees the new limit at once and starts a server with all of it
    student = login_in_new_context(browser, hub, student_in)
    open_spawn_form(student, hub)
    student.check("#ms-t-course-a-lab")
    memory = student.locator("#course-a-lab-memory_mb")
    expect(memory).to_have_attribute("max", "2048")
    memory.fill("2048")
    screenshot(student, "editor-student-spawn-form", artifacts_dir)
    student.click("#spawn_form [type=submit]")
    student.wait_for_url(f"**/user/{student_in}/lab**", timeout=120_000)
    student.wait_for_selector(".jp-Launcher", timeout=120_000)
    server = hub.server_model(student_in)
    assert server["ready"] and server["user_options"]["memory_mb"] == 2048
    pid = server["state"]["child_state"]["pid"]
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert f"MEM_LIMIT={2048 * 1024 * 1024}".encode() in environ
    hub.stop_server(student_in)
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 30, message="the student's server exited")

    # the outsider no longer sees it, and may neither open the editor nor call its API
    open_spawn_form(outsider, hub)
    expect(outsider.locator("#ms-t-course-a-extra")).to_have_count(1)
    expect(outsider.locator("#ms-t-course-a-lab")).to_have_count(0)
    expect(outsider.locator("#ms-t-course-b-lab")).to_have_count(1)
    response = outsider.goto(editor_url)
    assert response.status == 403
    expect(outsider.locator("#editor-error")).to_contain_text("custom:templates:edit")
    assert outsider.request.get(f"{editor_url}api/templates").status == 403
    screenshot(outsider, "editor-forbidden", artifacts_dir)
    assert student.goto(editor_url).status == 403  # being in the course does not make an editor

    # disable hides the template from the student's spawn form; enable brings it back
    toggle = a_row.locator("button.toggle")
    toggle.click()
    expect(a_cells.nth(ENABLED)).to_have_text("no")
    assert live(catalogue, "course-a-lab")["enabled"] is False
    open_spawn_form(student, hub)
    expect(student.locator("#ms-t-course-a-extra")).to_have_count(1)
    expect(student.locator("#ms-t-course-a-lab")).to_have_count(0)
    expect(toggle).to_have_text("Enable")
    toggle.click()
    expect(a_cells.nth(ENABLED)).to_have_text("yes")
    open_spawn_form(student, hub)
    expect(student.locator("#ms-t-course-a-lab")).to_have_count(1)

    # a concurrent edit: the boss saves while the TA has the template open; the TA is told so
    ta.fill("#field-display_name", "")
    a_row.locator("button.edit").click()
    expect(ta.locator("#field-display_name")).to_have_value("course-a-lab notebook")  # loaded afresh
    boss_token = hub.api("POST", "/users/boss/tokens", json={"note": "e2e"}).json()["token"]
    boss_api = {"Authorization": f"token {boss_token}"}
    current = requests.get(f"{editor_url}api/templates/course-a-lab", headers=boss_api, timeout=30).json()
    r = requests.put(f"{editor_url}api/templates/course-a-lab", timeout=30,
                     json={**current["spec"], "description": "set by the boss"},
                     headers={**boss_api, "If-Match": current["etag"]})
    assert r.status_code == 200, r.text
    ta.fill("#field-display_name", "Course A (TA)")
    ta.click("#save")
    expect(message).to_have_text("Someone else changed this template meanwhile: reload it and edit again.")
    expect(message).to_have_class(re.compile("alert-warning"))
    expect(problems).to_contain_text(["was changed by someone else"])
    screenshot(ta, "editor-conflict", artifacts_dir)
    spec = live(catalogue, "course-a-lab")
    assert spec["description"] == "set by the boss" and spec["display_name"] == "course-a-lab notebook"
    # reload, edit again: both edits survive, and the history shows both authors
    a_row.locator("button.edit").click()
    expect(ta.locator("#field-description")).to_have_value("set by the boss")
    ta.fill("#field-display_name", "Course A (TA)")
    ta.click("#save")
    expect(a_cells.nth(1)).to_have_text("Course A (TA)")
    spec = live(catalogue, "course-a-lab")
    assert spec["description"] == "set by the boss" and spec["display_name"] == "Course A (TA)"
    expect(ta.locator("#history details")).to_have_count(5)
    assert [history_entry(ta, i)[1:3] for i in range(5)] == [
        ("ta", "update"), ("boss", "update"), ("ta", "update"), ("ta", "update"), ("ta", "update")]
