"""examples/course-admins: its catalogue is valid and its config defines what the editor needs."""

from pathlib import Path

import pytest

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


def test_example_limits_course_editors_and_classes():
    """The service command parses into the editor's traits; the spawner's and the editor's
    allow-lists agree; the example's template is within what course editors may set."""
    from multiplespawner.catalogue import CatalogueError, CataloguePolicy
    from multiplespawner.editor.app import TemplateEditorApp
    from multiplespawner.editor.access import CourseRules, editor_from_scopes

    config = PyFileConfigLoader("jupyterhub_config.py", path=str(EXAMPLE)).load_config()
    (service,) = config.JupyterHub.services
    app = TemplateEditorApp()
    app.parse_command_line(service["command"][3:])
    assert app.allowed_spawner_classes == config.MultipleSpawner.allowed_spawner_classes == [
        "jupyterhub.spawner.LocalProcessSpawner"]
    assert app.allowed_configurer_classes == config.MultipleSpawner.allowed_configurer_classes == []
    assert app.course_editor_max_resources == {"memory_mb": 2048, "cpu": 2}

    rules = CourseRules(app.course_editor_max_resources, app.course_editor_max_lifetime_minutes,
                        tuple(app.course_editor_images), app.course_editor_environment_pattern)
    ta = editor_from_scopes("ta", ["custom:templates:edit!group=course-a"])
    spec = load_catalogue([EXAMPLE / "templates"]).templates["course-a-lab"].spec
    assert ta.refusals(spec, {**spec, "description": "new"}, rules) == []
    evil = {**spec, "access": {}, "spawner": {"class": "jupyterhub.spawner.SimpleLocalProcessSpawner",
                                              "kwargs": {"cmd": ["/bin/sh", "-c", "id"]}}}
    assert [r.split(":")[0] for r in ta.refusals(spec, evil, rules)] == ["access", "spawner"]
    policy = CataloguePolicy(frozenset(app.allowed_spawner_classes), frozenset(app.allowed_configurer_classes))
    load_catalogue([EXAMPLE / "templates"], policy)
    with pytest.raises(CatalogueError, match="allowed_spawner_classes"):
        load_catalogue([EXAMPLE / "templates"], CataloguePolicy(frozenset({"docker"})))
