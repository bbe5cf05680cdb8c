"""README command 1's hub: the quickstart config logs a user in and gives a running JupyterLab."""

import os
import secrets

import pytest
import requests

from tests.fixtures.browser import screenshot
from tests.fixtures.hub import VENV_BIN, remove_unix_user
from tests.fixtures.net import free_port
from tests.fixtures.procs import ManagedProcess, wait_until
from tests.fixtures.common import REPO


@pytest.fixture
def quickstart_hub(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    port = free_port()
    env = dict(
        os.environ,
        PATH=f"{VENV_BIN}:{os.environ['PATH']}",
        QUICKSTART_URL=f"http://127.0.0.1:{port}",
        QUICKSTART_HUB_PORT=str(free_port()),
        QUICKSTART_PROXY_API_PORT=str(free_port()),
    )
    hub = ManagedProcess(
        [VENV_BIN / "jupyterhub", "-f", REPO / "examples/quickstart/jupyterhub_config.py"],
        tmp_path / "hub.log", env=env, cwd=state, name="quickstart-hub",
    )
    hub.state_dir = state
    url = f"http://127.0.0.1:{port}"
    users = []
    try:
        hub.wait_for_port("127.0.0.1", port, timeout=60)
        wait_until(lambda: requests.get(f"{url}/hub/login", timeout=2).status_code == 200, 60,
                   message="quickstart login page")
        yield url, (state / "password").read_text().strip(), users, hub
    finally:
        hub.stop(grace=30)  # the quickstart keeps cleanup_servers on: the hub stops the servers
        for name in users:
            remove_unix_user(name)


def test_quickstart_login_spawn_lab(quickstart_hub, page, artifacts_dir):
    url, password, users, hub = quickstart_hub
    assert requests.get(f"{url}/hub/login", timeout=5).status_code == 200
    name = f"qs{secrets.token_hex(3)}"
    users.append(name)
    page.goto(f"{url}/hub/login")
    page.fill("input#username_input", name)
    page.fill("input#password_input", password)
    page.click("#login_submit")
    # The spawn form (if the catalogue offers a choice) starts the default template.
    page.wait_for_url(lambda u: "/hub/login" not in u)
    if "/hub/spawn" in page.url:
        page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(f"**/user/{name}/lab**", timeout=120_000)
    page.wait_for_selector(".jp-LauncherCard, .jp-Launcher", timeout=120_000)
    screenshot(page, "quickstart-lab", artifacts_dir)
    assert f"/user/{name}/lab" in page.url, hub.log_tail()
    # the quickstart's database is in write-ahead-log mode (multiplespawner.hub_database)
    state = hub.state_dir
    assert (state / "jupyterhub.sqlite-wal").exists(), sorted(p.name for p in state.iterdir())


def test_quickstart_refuses_system_accounts(quickstart_hub):
    """Notebooks run as the Unix account of the login name: root and other system accounts
    cannot log in, even with the quickstart password."""
    url, password, _, _ = quickstart_hub
    for name in ("root", "daemon"):
        s = requests.Session()
        s.get(f"{url}/hub/login", timeout=10)
        r = s.post(
            f"{url}/hub/login",
            data={"username": name, "password": password, "_xsrf": s.cookies.get("_xsrf", "")},
            allow_redirects=False, timeout=10,
        )
        assert r.status_code != 302, f"{name} was logged in"
        assert "jupyterhub-hub-login" not in s.cookies
    # a normal name with the same password does log in
    s = requests.Session()
    s.get(f"{url}/hub/login", timeout=10)
    r = s.post(
        f"{url}/hub/login",
        data={"username": f"qs{secrets.token_hex(3)}", "password": password, "_xsrf": s.cookies.get("_xsrf", "")},
        allow_redirects=False, timeout=10,
    )
    assert r.status_code == 302
