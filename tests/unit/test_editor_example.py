"""examples/course-admins: its catalogue is valid and its config defines what the editor needs."""

from pathlib import Path

from traitlets.config import PyFileConfigLoader

from multiplespawner.catalogue import load_catalogue

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "course-admins"


def test_example_catalogue_is_valid():
    catalogue = load_catalogue([EXAMPLE / "templates"])
    assert catalogue.templates["course-a-lab"].spec["tags"] == ["course-a"]


def test_example_config_loads():
    config = PyFileConfigLoader("jupyterhub_config.py", path=str(EXAMPLE)).load_config()
    assert config.MultipleSpawner.catalogue_paths == [str(EXAMPLE / "templates")]
    assert "custom:templates:edit" in config.JupyterHub.custom_scopes
    (service,) = config.JupyterHub.services
    assert service["oauth_client_allowed_scopes"] == ["custom:templates:edit"]
    assert f"--catalogue-dir={EXAMPLE / 'templates'}" in service["command"]
