"""The suite installs into an empty venv: packages import, entry points resolve, shipped files
are found from the installed copy (not the checkout).

That venv gets the oldest JupyterHub major the suite supports (5.x; the rest of the suite runs on
the newest), and a hub from it runs MultipleSpawner: a local spawn, a refused choice (400 with
its message, nothing started), a stop.
"""

import json
import shutil
import subprocess
import tempfile
import venv
from pathlib import Path

import pytest

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
import jupyterhub
print(json.dumps({
    "jupyterhub": jupyterhub.__version__,
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


@pytest.fixture(scope="module")
def installed_env(tmp_path_factory):
    """A new venv (world-readable: notebook servers run from it as other users) with the suite
    installed from a copy of the tracked tree, on JupyterHub 5."""
    env_dir = Path(tempfile.mkdtemp(prefix="suite-venv-", dir="/var/tmp"))
    env_dir.chmod(0o755)
    try:
        venv.create(env_dir, with_pip=True)
        py = env_dir / "bin" / "python"
        # a copy of the tracked tree, so nothing can be imported from the checkout by accident
        src = tmp_path_factory.mktemp("src")
        listed = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
            check=True, capture_output=True,
        ).stdout.decode().split("\0")
        for rel in filter(None, listed):
            if (REPO / rel).is_file():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / rel, src / rel)
        result = subprocess.run([py, "-m", "pip", "install", "-q", str(src), "jupyterhub>=5,<6"],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        yield env_dir
    finally:
        shutil.rmtree(env_dir, ignore_errors=True)


def test_pip_install_into_empty_venv(installed_env, tmp_path):
    env_dir = installed_env
    py = env_dir / "bin" / "python"
    out = subprocess.run([py, "-c", CHECK], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout)
    assert info["jupyterhub"].startswith("5.")
    assert set(info["entry_points"]) == {"multiple", "cloudssh", "header"}
    assert str(env_dir) in info["module_file"]
    assert info["playbooks"].startswith(str(env_dir / "share"))
    shipped_examples = sorted(
        str(p.relative_to(REPO / "examples"))
        for p in (REPO / "examples").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert info["examples"] == shipped_examples, "setup.cfg data_files misses example files"


def test_multiplespawner_on_jupyterhub_5(installed_env, hub_factory, unix_user, tmp_path):
    tmp_path.chmod(0o755)
    py = installed_env / "bin" / "python"
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps({
        "deployments": {"local": [{"name": "hub-host", "provider": "local"}]},
        "templates": [{
            "name": "local-mock", "resource_type": "local", "providers": ["local"],
            "resources": {"cpu": {"default": 1, "min": 0.5, "max": 2}},
            "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner",
                        "kwargs": {"cmd": [str(py), "-m", "jupyterhub.tests.mocksu"]}},
        }],
    }))
    hub = hub_factory(f"""
c.JupyterHub.spawner_class = "multiple"
c.MultipleSpawner.catalogue_paths = [{str(catalogue)!r}]
""", venv_bin=installed_env / "bin")
    name = unix_user()
    hub.create_user(name)
    # JupyterHub 5 takes the request body as the user_options (6 also accepts that form)
    r = hub.api("POST", f"/users/{name}/server", json={"template": "local-mock", "cpu": 8})
    assert r.status_code == 400 and "cpu 8 is outside 0.5..2" in r.json()["message"], r.text
    assert hub.server_model(name) is None
    hub.spawn(name, user_options={"template": "local-mock", "cpu": 1.5})
    assert hub.server_request(name, "env").json()["CPU_LIMIT"] == "1.5"
    hub.stop_server(name)
    assert "Traceback" not in hub.log_text()
