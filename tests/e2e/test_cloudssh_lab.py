"""Chromium opens JupyterLab through the hub on a notebook started over SSH and runs a cell.

The page, its API calls and the kernel's websocket all travel proxy -> SSH local forward ->
jupyterhub-singleuser on the "machine" (an sshd on 127.0.0.N).
"""

from tests.fixtures.browser import hub_login, run_in_new_notebook, screenshot
from tests.integration.test_cloudssh_spawner import machine  # noqa: F401  (fixture)


def test_lab_runs_a_cell_over_ssh(machine, hub_factory, page, artifacts_dir):  # noqa: F811
    hub = hub_factory(machine.config())
    hub_login(page, hub, machine.user)
    # no options form: the hub spawns at once and sends the browser to the lab
    page.wait_for_url(f"**/user/{machine.user}/lab**", timeout=120_000)
    text = run_in_new_notebook(
        page, "import os; print(os.getuid() == os.stat(os.path.expanduser('~')).st_uid, 6 * 7)"
    )
    screenshot(page, "cloudssh-lab-cell", artifacts_dir)
    assert text == "True 42"
    state = hub.server_model(machine.user)["state"]
    assert state["host"] == machine.sshd.host
    assert len(machine.sshd.connections()) == 1
