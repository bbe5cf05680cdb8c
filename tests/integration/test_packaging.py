"""The suite installs into an empty venv: packages import, entry points resolve, shipped files
are found from the installed copy (not the checkout)."""

import json
import shutil
import subprocess
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHECK = r"""
import json, os
import multiplespawner, headerauthenticator, ldap_hooks, cloudsshspawner
from importlib.metadata import entry_points
from jupyterhub.spawner import Spawner
from jupyterhub.auth import Authenticator
from multiplespawner.shared_files import shared_path
eps = {}
for group, base in (("jupyterhub.spawners", Spawner), ("jupyterhub.authenticators", Authenticator)):
    for ep in entry_points(group=group):
        if ep.name in ("multiple", "cloudssh", "header"):
            cls = ep.load()
            assert issubclass(cls, base), ep
            eps[ep.name] = f"{cls.__module__}.{cls.__qualname__}"
print(json.dumps({
    "entry_points": eps,
    "module_file": multiplespawner.__file__,
    "playbooks": str(shared_path("playbooks")),
    "examples": sorted(
        os.path.relpath(os.path.join(d, f), shared_path("examples"))
        for d, _, fs in os.walk(shared_path("examples")) for f in fs
        if "__pycache__" not in d  # pip byte-compiles the shipped .py files
    ),
}))
"""


def test_pip_install_into_empty_venv(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    # a copy of the tracked tree, so nothing can be imported from the checkout by accident
    src = tmp_path / "src"
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
        check=True, capture_output=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    result = subprocess.run([py, "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    out = subprocess.run([py, "-c", CHECK], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout)
    assert set(info["entry_points"]) == {"multiple", "cloudssh", "header"}
    assert str(env_dir) in info["module_file"]
    assert info["playbooks"].startswith(str(env_dir / "share"))
    shipped_examples = sorted(
        str(p.relative_to(REPO / "examples"))
        for p in (REPO / "examples").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert info["examples"] == shipped_examples, "setup.cfg data_files misses example files"
