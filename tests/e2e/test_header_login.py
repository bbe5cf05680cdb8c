"""Chromium logs in through a real nginx (the front proxy) to a real hub with
HeaderAuthenticator and lands on the user's own server page; the login's auth_state, groups
and shared header (in the started server's environment) are checked afterwards."""

import json
import secrets

import pytest

from tests.fixtures.browser import screenshot
from tests.integration.test_header_nginx import DATA, environ_of, front_proxied_hub


@pytest.fixture
def person(unix_user):
    return unix_user(), secrets.token_urlsafe(8)


@pytest.fixture
def browser_context_args(person):
    name, password = person
    return {"http_credentials": {"username": name, "password": password}}


def test_browser_logs_in_through_nginx(page, person, hub_factory, nginx_factory, artifacts_dir):
    name, password = person
    hub, nginx, _ = front_proxied_hub(hub_factory, nginx_factory, name, password)

    page.goto(f"{nginx.url}/")
    # / -> /hub/ -> /hub/login (headers) -> /hub/spawn -> /user/<name>/
    page.wait_for_url(f"{nginx.url}/user/{name}/**", timeout=90_000)
    screenshot(page, "header-login-user-page", artifacts_dir)
    assert page.url.startswith(f"{nginx.url}/user/{name}/")

    page.goto(f"{nginx.url}/hub/home")
    assert name in page.content()
    screenshot(page, "header-login-hub-home", artifacts_dir)

    # what the browser's login brought along: parsed data in auth_state, groups from the groups
    # header, and the shared header in the environment of the server the browser opened
    model = hub.api("GET", f"/users/{name}").json()
    assert model["auth_state"]["X-User-Data"] == DATA
    assert sorted(model["groups"]) == ["physics", "staff"]
    server = model["servers"][""]
    assert server["ready"]
    env = environ_of(server["state"]["pid"])
    assert json.loads(env["X-User-Data"]) == DATA
