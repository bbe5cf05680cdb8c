"""In Chromium: a student picks a full template without a line on the spawn form and gets the
refusal on the form; then picks a full template with a line, sees their place in line and an
estimate on the spawn-pending page, and lands on their server when the place frees."""

import json
import re
import sys

from multiplespawner.catalogue import DEFAULT_SPAWNER_CLASSES
from tests.fixtures.browser import hub_login, screenshot

SIMPLE = "jupyterhub.spawner.SimpleLocalProcessSpawner"


def test_a_student_over_quota_waits_in_line_and_gets_the_server_when_a_place_frees(
        hub_factory, page, artifacts_dir, tmp_path):
    tmp_path.chmod(0o755)
    catalogue = tmp_path / "catalogue.json"
    spawner = {"class": SIMPLE, "kwargs": {"cmd": [sys.executable, "-m", "jupyterhub.tests.mocksu"],
                                           "home_dir_template": f"{tmp_path}/{{username}}"}}
    catalogue.write_text(json.dumps({
        "deployments": {"local": [{"name": "hub-host", "provider": "local"}]},
        "templates": [
            {"name": "gpu", "display_name": "GPU notebook", "resource_type": "local", "providers": ["local"],
             "lifetime_minutes": {"default": 4}, "quota": {"running": 1, "queue": True, "queue_timeout": 300},
             "spawner": spawner},
            {"name": "exam", "display_name": "Exam notebook", "resource_type": "local", "providers": ["local"],
             "quota": {"running": 1}, "spawner": spawner},
        ],
    }))
    hub = hub_factory(f"""
c.JupyterHub.spawner_class = "multiple"
c.MultipleSpawner.catalogue_paths = [{str(catalogue)!r}]
c.MultipleSpawner.allowed_spawner_classes = {[*DEFAULT_SPAWNER_CLASSES, SIMPLE]!r}
""")
    for holder, template in (("holder", "gpu"), ("examiner", "exam")):
        hub.create_user(holder)
        hub.spawn(holder, user_options={"template": template})

    hub_login(page, hub, "student")
    # a full template without a line: the form comes back with the refusal
    page.goto(f"{hub.url}/hub/spawn")
    page.locator("#ms-t-exam").check()
    page.locator("form#spawn_form [type=submit]").click()
    page.get_by_text("Exam notebook is full: all 1 places are in use.").wait_for()
    assert hub.server_model("student") is None

    page.goto(f"{hub.url}/hub/spawn")
    page.locator("#ms-t-gpu").check()
    page.locator("form#spawn_form [type=submit]").click()
    page.wait_for_url(lambda url: "/hub/spawn-pending/student" in url)
    # the holder's session lasts 4 min at most (less the time it has run): the estimate says so
    page.locator("#progress-message", has_text=re.compile(r"^1st in line for GPU notebook, about [34] min$")).wait_for()
    screenshot(page, "quota-line-spawn-pending", artifacts_dir)
    assert hub.server_model("student")["pending"] == "spawn"

    hub.stop_server("holder")
    page.wait_for_url(lambda url: "/user/student/" in url, timeout=60_000)
    assert "/user/student/" in page.content()  # the mock server echoes its path
