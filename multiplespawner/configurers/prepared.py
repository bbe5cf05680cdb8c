"""Whether a machine's image already holds the notebook environment a configure run would make.

A machine made from a prepared image (``images/vm``) carries the image's record of what its
build prepared (:attr:`~multiplespawner.providers.base.Machine.prepared`): for the notebook
environment its venv ``path``, the ``python`` that made it and that Python's exact
``python_version``, the ``pip freeze --all`` lines of the finished venv (``packages``) and the
``singleuser_version`` that ``jupyterhub-singleuser --version`` printed in it at build time.

:func:`notebook_env_differences` compares that record with what the ``notebook_env`` role would
do with this run's variables, by the role's own criterion: the role installs nothing when every
requirement appears exactly in ``pip freeze --all`` of the venv at ``notebook_env_path``, made
by ``notebook_env_python``, and (with a wheel directory) only on the Python the wheels are for.
Only when nothing differs may the configurer skip the role; any difference, or a missing or
malformed record, means the machine is configured in full. Nothing is assumed: a fact the
record does not state is a difference.
"""

from __future__ import annotations

from pathlib import Path

import yaml

#: the role (and its tag in the shipped playbook) that installs the notebook environment
NOTEBOOK_ENV_ROLE = "notebook_env"


def role_defaults(playbook_root: Path, role: str) -> dict:
    """The variables in ``roles/<role>/defaults/main.yml`` below ``playbook_root`` ({} if none)."""
    path = playbook_root / "roles" / role / "defaults" / "main.yml"
    try:
        values = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return {}
    return values if isinstance(values, dict) else {}


def notebook_env_differences(prepared: dict, variables: dict) -> list[str]:
    """What differs between the image's prepared notebook environment and the one the
    ``notebook_env`` role would make with ``variables`` (its defaults overlaid with this run's
    variables); [] when the image holds exactly that environment. Each entry is a sentence for
    the log ("the image's notebook environment is at X, this run wants Y")."""
    env = prepared.get("notebook_env") if isinstance(prepared, dict) else None
    if not isinstance(env, dict):
        return ["the image records no prepared notebook environment"]
    differences = []
    for fact, variable in (("path", "notebook_env_path"), ("python", "notebook_env_python")):
        have, want = env.get(fact), variables.get(variable)
        if not have or have != want:
            differences.append(f"the image's notebook environment {fact} is {have!r}, this run wants {want!r}")
    wheel_python = variables.get("notebook_env_wheel_python") or ""
    if wheel_python and env.get("python_version") != wheel_python:
        differences.append(f"the image's Python is {env.get('python_version')!r}, "
                           f"the wheels are for {wheel_python!r}")
    packages = env.get("packages")
    wanted = variables.get("notebook_env_packages")
    if not isinstance(packages, list) or not isinstance(wanted, list) or not wanted:
        differences.append("the image's package list or this run's requirements are missing")
    else:
        missing = [p for p in wanted if p not in packages]
        if missing:
            differences.append(f"not installed exactly in the image: {', '.join(map(str, missing))}")
    if not env.get("singleuser_version"):
        differences.append("the image does not record that jupyterhub-singleuser ran in it")
    return differences
