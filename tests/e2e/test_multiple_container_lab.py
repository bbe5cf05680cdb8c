"""A student picks a container template on the spawn page and gets JupyterLab in a container with
the CPU and memory chosen; stopping the server from the hub's home page removes the container.

The hub's API listens on the Docker bridge gateway so the notebook in the container can reach
it; the browser uses the public proxy on 127.0.0.1. Templates are restricted by group: each
course sees its own templates and the open one, never the other course's.
"""

import json
import secrets

from tests.fixtures.browser import login_in_new_context, screenshot
from tests.fixtures.docker_engine import containers
from tests.fixtures.procs import wait_until

MIB = 1024 * 1024


def container_template(name, display_name, group, image):
    return {
        "name": name,
        "display_name": display_name,
        "resource_type": "container",
        "providers": ["docker"],
        "requires": ["docker", "image"],
        "access": {"groups": [group]},
        # defaults differ from what the student picks, so the test sees the form's values used
        "resources": {"cpu": {"default": 2, "min": 0.5, "max": 2},
                      "memory_mb": {"default": 1024, "min": 256, "max": 2048}},
        "spawner": {"class": "dockerspawner.DockerSpawner",
                    "kwargs": {"image": "{DEPLOYMENT_IMAGE}", "remove": True,
                               "name_template": "ms-e2e-{username}-" + secrets.token_hex(3)}},
    }


def write_catalogue(folder, image):
    folder.chmod(0o755)
    path = folder / "catalogue.json"
    path.write_text(json.dumps({
        "deployments": {"container": [{"name": "here", "provider": "docker", "image": image}],
                        "local": [{"name": "hub-host", "provider": "local"}]},
        "templates": [
            container_template("course-a-box", "Course A container", "course-a", image),
            container_template("course-b-box", "Course B container", "course-b", image),
            {"name": "open-local", "display_name": "Open local notebook", "resource_type": "local",
             "providers": ["local"],
             "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner", "kwargs": {}}},
        ],
    }))
    return path


def offered_templates(page) -> list[str]:
    return page.locator("#spawn_form input[name=template]").evaluate_all("els => els.map(e => e.value)")


def cgroup_value(container, *paths) -> list[str]:
    """The first readable of ``paths`` inside the container (cgroup v1 or v2 file names)."""
    for path in paths:
        code, out = container.exec_run(["cat", path])
        if code == 0:
            return out.decode().split()
    raise AssertionError(f"none of {paths} readable in the container")


def test_course_container_lab_with_chosen_limits(
    hub_factory, docker_engine, notebook_image, tmp_path, page, artifacts_dir
):
    catalogue = write_catalogue(tmp_path, notebook_image)
    gateway = docker_engine.networks.get("bridge").attrs["IPAM"]["Config"][0]["Gateway"]
    hub = hub_factory(f"""
c.JupyterHub.spawner_class = "multiple"
c.JupyterHub.hub_ip = {gateway!r}
c.JupyterHub.hub_connect_ip = {gateway!r}
c.MultipleSpawner.catalogue_paths = [{str(catalogue)!r}]
""")
    student_a, student_b = f"sa{secrets.token_hex(3)}", f"sb{secrets.token_hex(3)}"
    hub.create_user(student_a, groups=["course-a"])
    hub.create_user(student_b, groups=["course-b"])
    browser = page.context.browser

    # course B sees its own container template and the open one, nothing of course A
    b = login_in_new_context(browser, hub, student_b)
    b.goto(f"{hub.url}/hub/spawn")
    assert offered_templates(b) == ["course-b-box", "open-local"]
    assert "Course A container" not in b.content()
    screenshot(b, "multiple-lab-course-b-form", artifacts_dir)

    # course A: the reverse; picks its container with 1 CPU and 512 MiB
    a = login_in_new_context(browser, hub, student_a)
    a.goto(f"{hub.url}/hub/spawn")
    assert offered_templates(a) == ["course-a-box", "open-local"]
    assert "Course B container" not in a.content()
    a.check("#ms-t-course-a-box")
    assert a.locator("#course-a-box-cpu").is_visible()
    a.fill("#course-a-box-cpu", "1")
    a.fill("#course-a-box-memory_mb", "512")
    screenshot(a, "multiple-lab-course-a-form", artifacts_dir)
    a.click("#spawn_form [type=submit]")
    a.wait_for_url(f"**/user/{student_a}/lab**", timeout=180_000)
    a.wait_for_selector(".jp-Launcher", timeout=120_000)
    screenshot(a, "multiple-lab-course-a-lab", artifacts_dir)

    model = hub.server_model(student_a)
    assert model["user_options"] == {"template": "course-a-box", "provider": "docker",
                                     "cpu": 1, "memory_mb": 512}
    container_id = model["state"]["child_state"]["object_id"]
    container = docker_engine.containers.get(container_id)
    host_config = container.attrs["HostConfig"]
    assert container.attrs["Config"]["Image"] == notebook_image
    assert host_config["Memory"] == 512 * MIB
    # DockerSpawner expresses cpu_limit as a CFS quota over a period (not NanoCpus)
    assert host_config["NanoCpus"] == 0
    assert (host_config["CpuQuota"], host_config["CpuPeriod"]) == (100_000, 100_000)
    # what the kernel enforces inside the container
    assert cgroup_value(container, "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                        "/sys/fs/cgroup/memory.max") == [str(512 * MIB)]
    quota = cgroup_value(container, "/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu.max")
    period = cgroup_value(container, "/sys/fs/cgroup/cpu/cpu.cfs_period_us", "/sys/fs/cgroup/cpu.max")
    assert int(quota[0]) / int(period[-1]) == 1

    # stop from the hub's home page: the server goes and DockerSpawner removes the container
    a.goto(f"{hub.url}/hub/home")
    a.click("#stop")
    a.wait_for_selector("#stop", state="hidden", timeout=90_000)  # the page's stop call returned
    assert a.inner_text("#start").strip() == "Start My Server"
    screenshot(a, "multiple-lab-course-a-stopped", artifacts_dir)
    wait_until(lambda: hub.server_model(student_a) is None, timeout=60, message="server stopped")
    wait_until(lambda: not containers(docker_engine, id=container_id),
               timeout=60, message="container removed")
