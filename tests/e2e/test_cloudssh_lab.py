"""Chromium opens JupyterLab through the hub on a notebook started over SSH and runs a cell.

The page, its API calls and the kernel's websocket all travel proxy -> SSH local forward ->
jupyterhub-singleuser on the "machine" (an sshd on 127.0.0.N).
"""

from tests.fixtures.browser import hub_login, screenshot
from tests.integration.test_cloudssh_spawner import machine  # noqa: F401  (fixture)


def test_lab_runs_a_cell_over_ssh(machine, hub_factory, page, artifacts_dir):  # noqa: F811
    hub = hub_factory(machine.config())
    hub_login(page, hub, machine.user)
    # no options form: the hub spawns at once and sends the browser to the lab
    page.wait_for_url(f"**/user/{machine.user}/lab**", timeout=120_000)
    page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click(timeout=60_000)
    editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
    editor.wait_for(timeout=60_000)
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=300_000)  # kernel start under load
    editor.click()
    page.keyboard.type("import os; print(os.getuid() == os.stat(os.path.expanduser('~')).st_uid, 6 * 7)")
    page.keyboard.press("Shift+Enter")
    output = page.locator(".jp-OutputArea-output").first
    output.wait_for(timeout=300_000)  # first execution under load
    screenshot(page, "cloudssh-lab-cell", artifacts_dir)
    assert output.inner_text().strip() == "True 42"
    state = hub.server_model(machine.user)["state"]
    assert state["host"] == machine.sshd.host
    assert len(machine.sshd.connections()) == 1
