"""Chromium loads the hub's login page and logs a user in."""

from tests.fixtures.browser import hub_login, screenshot


def test_login_page_renders_and_login_works(hub_factory, page, artifacts_dir):
    hub = hub_factory("c.JupyterHub.spawner_class = 'simple'\n")
    page.goto(f"{hub.url}/hub/login")
    assert page.locator("#login_submit").is_visible()
    screenshot(page, "hub-login-page", artifacts_dir)
    hub_login(page, hub, "alice")
    assert "/hub/" in page.url
    assert hub.user("alice")["name"] == "alice"
