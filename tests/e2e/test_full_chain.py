"""The whole chain in Chromium: front proxy -> header login -> spawn form -> container machine ->
Ansible -> CloudSSHSpawner -> JupyterLab runs a cell -> stop -> nothing left.

nginx authenticates the person (basic auth stands in for the institution's login) and passes the
identity headers; the hub (HeaderAuthenticator, MultipleSpawner) shows the spawn form; the user
picks the "Container machine" template; the hub creates a container of the prepared ssh-machine
image, configures it with the shipped playbooks (their task results appear on the spawn page),
starts the lab over the SSH tunnels, and the browser runs a cell in it. Stopping removes the
container, the per-server keys and the tunnel.
"""

import base64
import json
import secrets

import pytest

from tests.fixtures.browser import run_in_new_notebook, screenshot
from tests.fixtures.machines import MachineCounter
from tests.integration.test_header_nginx import front_proxied_hub
from tests.integration.test_machines_docker import machine_catalogue


@pytest.fixture
def person():
    # a Unix name nginx and the machine both accept; no Unix account is needed on the hub host
    return f"st{secrets.token_hex(4)}", secrets.token_urlsafe(8)


@pytest.fixture
def browser_context_args(person):
    name, password = person
    # on every request: the lab's fetch() and websocket calls must carry the front proxy's
    # credentials too, and Chromium answers nginx's basic-auth challenge only for navigations
    # (an institution's portal would use its SSO cookie instead)
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"extra_http_headers": {"Authorization": f"Basic {token}"}}


def test_click_to_lab_on_a_container_machine(page, person, hub_factory, nginx_factory, docker_engine,
                                              prepared_image, tmp_path, artifacts_dir):  # noqa: F811
    name, password = person
    tmp_path.chmod(0o755)
    catalogue = machine_catalogue(prepared_image)
    local = {"name": "local-mock", "display_name": "Local (mock)", "resource_type": "local",
             "providers": ["local"], "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner"}}
    catalogue["deployments"]["local"] = [{"name": "hub-host", "provider": "local"}]
    catalogue["templates"].insert(0, local)
    cat_file = tmp_path / "catalogue.json"
    cat_file.write_text(json.dumps(catalogue))
    hub_id = f"e2e-{secrets.token_hex(6)}"
    hub, nginx, _ = front_proxied_hub(hub_factory, nginx_factory, name, password, extra_config=f"""
c.JupyterHub.spawner_class = "multiple"
c.MultipleSpawner.catalogue_paths = [{str(cat_file)!r}]
c.MachineOrchestrator.hub_id = {hub_id!r}
c.Spawner.poll_interval = 5
""")
    counter = MachineCounter.of_hub(docker_engine, hub_id, hub)

    # login through nginx lands on the spawn form; pick the container machine
    page.goto(f"{nginx.url}/hub/spawn")
    page.wait_for_selector("#ms-t-container-machine", timeout=60_000)
    page.check("#ms-t-container-machine")
    page.fill("#container-machine-memory_mb", "1024")
    screenshot(page, "full-chain-1-form", artifacts_dir)
    page.locator("form#spawn_form [type=submit]").click()

    # the spawn page shows Ansible's task results while the machine is configured
    page.wait_for_selector("#progress-log", state="attached", timeout=60_000)
    page.locator("#progress-details").evaluate("d => d.open = true")
    page.locator("#progress-log", has_text="Configuring: TASK [").wait_for(timeout=600_000)
    screenshot(page, "full-chain-2-configuring", artifacts_dir)

    # then the lab, over the SSH tunnel, runs a cell as the notebook user on the machine
    page.wait_for_url(f"**/user/{name}/lab**", timeout=600_000)
    # the kernel starts on the machine; its websocket runs through nginx, CHP and the tunnel
    text = run_in_new_notebook(
        page, "import getpass, socket; print(getpass.getuser(), socket.gethostname().startswith('jh-'), 6 * 7)"
    )
    screenshot(page, "full-chain-3-lab-cell", artifacts_dir)
    assert text == f"{name} True 42"

    model = hub.server_model(name)
    container_id = model["state"]["machine"]["machine"]["id"]
    assert [c.id for c in counter.containers()] == [container_id]

    # stop from the hub's home page
    page.goto(f"{nginx.url}/hub/home")
    page.locator("#stop").click()
    page.locator("#start").wait_for(timeout=120_000)
    screenshot(page, "full-chain-4-stopped", artifacts_dir)
    left = counter.wait_for_nothing_left()
    assert left == {}, f"left behind: {left}"
