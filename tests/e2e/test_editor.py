"""A course admin edits a template in the browser; students see the change at once."""

import requests

from tests.fixtures.browser import login_in_new_context, screenshot
from tests.fixtures.editor import editor_hub_config, write_catalogue
from tests.fixtures.procs import wait_until


def test_course_admin_edits_students_see_it(hub_factory, unix_user, tmp_path, page, artifacts_dir):
    catalogue = tmp_path / "catalogue"
    write_catalogue(catalogue)
    hub = hub_factory(editor_hub_config(catalogue))
    student_in = unix_user("stin")
    hub.create_user("ta", groups=["course-a-tas"])
    hub.create_user(student_in, groups=["course-a"])
    hub.create_user("outsider")
    wait_until(lambda: requests.get(f"{hub.url}/services/templates/", timeout=2,
                                    allow_redirects=False).status_code == 302, 60, message="editor up")
    browser = page.context.browser

    # the course admin raises the memory limit and restricts the template to course-a
    ta = login_in_new_context(browser, hub, "ta")
    ta.goto(f"{hub.url}/services/templates/")
    row = ta.locator('tr[data-template="course-a-lab"]')
    row.locator("button.edit").click()
    ta.fill("#field-memory_mb-max", "2048")
    ta.fill("#field-access-groups", "course-a")
    ta.click("#save")
    ta.wait_for_selector("#message.alert-success")
    assert "2048" in row.inner_text() and "course-a" in row.inner_text()
    assert ta.locator('tr[data-template="course-b-lab"] button.edit').count() == 0
    screenshot(ta, "editor-after-save", artifacts_dir)

    # a student in the group sees the new limit at once and can start it with that much memory
    student = login_in_new_context(browser, hub, student_in)
    student.goto(f"{hub.url}/hub/spawn")
    student.check("#ms-t-course-a-lab")
    memory = student.locator("#course-a-lab-memory_mb")
    assert memory.get_attribute("max") == "2048"
    memory.fill("2048")
    screenshot(student, "editor-student-spawn-form", artifacts_dir)
    student.click("#spawn_form [type=submit]")
    student.wait_for_url(f"**/user/{student_in}/lab**", timeout=120_000)
    student.wait_for_selector(".jp-Launcher", timeout=120_000)
    assert hub.server_model(student_in)["user_options"]["memory_mb"] == 2048

    # a student outside the group no longer sees it, and may not open the editor
    outsider = login_in_new_context(browser, hub, "outsider")
    outsider.goto(f"{hub.url}/hub/spawn")
    assert outsider.locator("#ms-t-course-a-lab").count() == 0
    assert outsider.locator("#ms-t-course-b-lab").count() == 1
    response = outsider.goto(f"{hub.url}/services/templates/")
    assert response.status == 403
    assert "custom:templates:edit" in outsider.locator("#editor-error").inner_text()
    screenshot(outsider, "editor-forbidden", artifacts_dir)
