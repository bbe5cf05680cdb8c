"""The shipped playbooks pass ansible-playbook's syntax check and ansible-lint's production
profile, offline, and every role folder is installed by setup.cfg's data_files."""

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
BIN = Path(sys.executable).parent


@pytest.fixture
def playbook_copy(tmp_path):
    """The playbooks in a scratch directory (linters leave caches next to what they check)."""
    copy = tmp_path / "playbooks"
    shutil.copytree(PLAYBOOKS, copy)
    return copy


def isolated_env(tmp_path) -> dict:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (tmp_path / "ansible.cfg").write_text("")
    return {
        **os.environ,
        "HOME": str(home),
        "ANSIBLE_HOME": str(home / ".ansible"),
        "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": "",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "LC_ALL": "C.UTF-8",
        "NO_COLOR": "1",
    }


def test_syntax_check(playbook_copy, tmp_path):
    result = subprocess.run(
        [BIN / "ansible-playbook", "--syntax-check", "-i", "localhost,", "notebook-machine.yml"],
        cwd=playbook_copy, env=isolated_env(tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile(playbook_copy, tmp_path):
    lint = BIN / "ansible-lint"
    if not lint.exists():
        pytest.fail("ansible-lint is not installed (it is in the `test` extra)")
    result = subprocess.run(
        [lint, "--offline", "--profile", "production", "--nocolor", "notebook-machine.yml", "roles"],
        cwd=playbook_copy, env=isolated_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "0 failure(s), 0 warning(s)" in output, output


def test_setup_cfg_installs_every_playbook_folder():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    installed = {
        target.removeprefix("share/jupyterhub-multiplespawner/")
        for target in config["options.data_files"]
        if target.startswith("share/jupyterhub-multiplespawner/playbooks")
    }
    folders = {
        str(p.parent.relative_to(REPO))
        for p in PLAYBOOKS.rglob("*") if p.is_file()
    }
    assert folders == installed
