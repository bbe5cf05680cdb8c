"""Suite-wide test configuration.

* Tests are marked ``unit``, ``integration`` or ``e2e`` by the folder they live in.
* With ``CI=true`` a skipped integration or e2e test fails the run: CI must exercise the real
  services, not quietly pass around them.
* Service fixtures (slapd, sshd, dockerd, nginx, JupyterHub, Chromium, SLURM) come from
  ``tests/fixtures/`` and are registered below.
"""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = [
    "tests.fixtures.common",
    "tests.fixtures.hub",
    "tests.fixtures.browser",
    "tests.fixtures.slapd",
    "tests.fixtures.sshd",
    "tests.fixtures.docker_engine",
    "tests.fixtures.nginx",
    "tests.fixtures.machines",
    "tests.fixtures.moto",
    "tests.fixtures.libvirt",
    "tests.fixtures.slurm",
    "tests.fixtures.swarm",
    "tests.fixtures.prometheus",
]

_KINDS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO).parts
        for kind in _KINDS:
            if len(parts) > 1 and parts[0] == "tests" and parts[1] == kind:
                item.add_marker(getattr(pytest.mark, kind))


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)  # lets fixtures see whether the test failed
    if (
        report.skipped
        and _in_ci()
        and (item.get_closest_marker("integration") or item.get_closest_marker("e2e"))
        and not hasattr(report, "wasxfail")
    ):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true forbids skipping real-service tests): {reason}"
