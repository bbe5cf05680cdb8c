"""The whole chain in Chromium: front proxy -> header login -> spawn form -> a created machine ->
Ansible -> CloudSSHSpawner -> JupyterLab runs a cell -> stop -> nothing left.

nginx authenticates the person (basic auth stands in for the institution's login) and passes the
identity headers; the hub (HeaderAuthenticator, MultipleSpawner) shows the spawn form; the user
picks a machine template; the hub creates the machine, configures it with the shipped playbooks
(their task results appear on the spawn page), starts the lab over the SSH tunnels, and the
browser runs a cell in it. Stopping removes the machine, the per-server keys and the tunnel.

The chain runs on two kinds of machine (``machine`` fixture):

* ``container``: a container of the prepared ssh-machine image (notebook environment baked in);
* ``vm``: a libvirt virtual machine under QEMU software emulation, from the image of
  ``images/vm`` (notebook environment baked in and recorded in the image, so the configurer
  runs only the personalisation). One VM boots; every wait is longer, because the guest boots,
  runs Ansible's modules and starts the notebook and its kernel emulated.
"""

import base64
import json
import secrets
from dataclasses import dataclass

import pytest

from multiplespawner.machines import DEFAULT_NOTEBOOK_ENV
from tests.fixtures.browser import run_in_new_notebook, screenshot
from tests.fixtures.machines import MachineCounter
from tests.integration.test_header_nginx import front_proxied_hub
from tests.integration.test_machines_docker import machine_catalogue


@dataclass
class ChainMachine:
    """One kind of machine the chain runs on."""

    template: str  #: the template's name (the spawn form's radio button is #ms-t-<template>)
    catalogue: dict  #: deployments and that template
    hub_config: str  #: extra hub configuration (provider options, timeouts)
    docker: object = None  #: docker-py client, to count containers
    libvirt: tuple | None = None  #: (uri, storage_dir), to count domains and machine files
    patience: float = 1  #: every wait of the browser is multiplied by this


@pytest.fixture(params=["container", pytest.param("vm", marks=pytest.mark.slow)])
def machine(request) -> ChainMachine:
    if request.param == "container":
        return ChainMachine("container-machine", machine_catalogue(request.getfixturevalue("prepared_image")),
                            "", docker=request.getfixturevalue("docker_engine"))
    uri = request.getfixturevalue("libvirt_uri")
    image = request.getfixturevalue("vm_image")
    storage = request.getfixturevalue("libvirt_storage") / f"hub-{secrets.token_hex(4)}"  # counted alone
    catalogue = machine_catalogue(
        str(image), provider="libvirt", name="vm-machine", display_name="Virtual machine",
        notebook_env=DEFAULT_NOTEBOOK_ENV, cpu=2,
        # an emulated guest starts jupyterhub-singleuser in one to three minutes
        spawner_kwargs={"start_timeout": 1200, "http_timeout": 900, "connect_timeout": 60,
                        "keepalive_interval": 10},
    )
    config = f"""
c.MachineOrchestrator.provider_options = {{"libvirt": {{"uri": {uri!r}, "storage_dir": {str(storage)!r}}}}}
c.MachineOrchestrator.ready_timeout = 600
"""
    return ChainMachine("vm-machine", catalogue, config, libvirt=(uri, storage), patience=3)


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


def test_click_to_lab_on_a_machine(page, person, machine, hub_factory, nginx_factory, tmp_path,
                                   artifacts_dir, request):
    name, password = person
    kind = request.node.callspec.id
    ms = lambda seconds: int(seconds * 1000 * machine.patience)  # noqa: E731
    tmp_path.chmod(0o755)
    catalogue = machine.catalogue
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
{machine.hub_config}
""")
    counter = MachineCounter.of_hub(machine.docker, hub_id, hub, libvirt=machine.libvirt)

    # login through nginx lands on the spawn form; pick the machine template
    page.goto(f"{nginx.url}/hub/spawn")
    page.wait_for_selector(f"#ms-t-{machine.template}", timeout=60_000)
    page.check(f"#ms-t-{machine.template}")
    page.fill(f"#{machine.template}-memory_mb", "1024")
    screenshot(page, f"full-chain-{kind}-1-form", artifacts_dir)
    page.locator("form#spawn_form [type=submit]").click()

    # the spawn page shows Ansible's task results while the machine is configured
    page.wait_for_selector("#progress-log", state="attached", timeout=60_000)
    page.locator("#progress-details").evaluate("d => d.open = true")
    page.locator("#progress-log", has_text="Configuring: TASK [").wait_for(timeout=ms(600))
    screenshot(page, f"full-chain-{kind}-2-configuring", artifacts_dir)

    # then the lab, over the SSH tunnel, runs a cell as the notebook user on the machine
    page.wait_for_url(f"**/user/{name}/lab**", timeout=ms(600))
    # the kernel starts on the machine; its websocket runs through nginx, CHP and the tunnel
    text = run_in_new_notebook(
        page, "import getpass, socket; print(getpass.getuser(), socket.gethostname().startswith('jh-'), 6 * 7)",
        patience=machine.patience,
    )
    screenshot(page, f"full-chain-{kind}-3-lab-cell", artifacts_dir)
    assert text == f"{name} True 42"

    if kind == "vm":  # the image holds exactly this environment: only the personalisation ran
        log = hub.log_text()
        assert "the image is prepared with this notebook environment" in log
        assert "TASK [List the packages in the notebook environment]" not in log

    model = hub.server_model(name)
    assert counter.machines() == [model["state"]["machine"]["machine"]["id"]]

    # stop from the hub's home page
    page.goto(f"{nginx.url}/hub/home")
    page.locator("#stop").click()
    page.locator("#start").wait_for(timeout=ms(120))
    screenshot(page, f"full-chain-{kind}-4-stopped", artifacts_dir)
    left = counter.wait_for_nothing_left()
    assert left == {}, f"left behind: {left}"
