"""Course admins edit templates while the hub runs (template editor service + RBAC).

Group ``admins`` may edit every template; group ``course-a-tas`` the templates tagged
``course-a``, and of those only what a course admin should (names, access within course-a,
memory up to 2 GiB, sessions up to 8 hours, ``COURSE_*`` environment): never the spawner class,
its kwargs or how a machine is configured. Everyone may open the editor page (and is told there
what permission is missing). Templates may use only the classes listed below, whoever edits them.
Templates live in ``templates/`` beside this file (copy it to e.g. /etc/jupyterhub/templates
and point both the spawner and the service at it).
"""

import os
import sys
from pathlib import Path

c = get_config()  # noqa: F821

catalogue_dir = os.environ.get("TEMPLATE_CATALOGUE_DIR", str(Path(__file__).parent / "templates"))

#: the only spawner class this hub's templates may name (the loader refuses any other)
SPAWNER_CLASSES = ["jupyterhub.spawner.LocalProcessSpawner"]

c.JupyterHub.spawner_class = "multiple"
c.MultipleSpawner.catalogue_paths = [catalogue_dir]
c.MultipleSpawner.allowed_spawner_classes = SPAWNER_CLASSES
c.MultipleSpawner.allowed_configurer_classes = []

c.JupyterHub.custom_scopes = {
    "custom:templates:edit": {"description": "Edit MultipleSpawner templates"},
}
c.JupyterHub.load_roles = [
    {"name": "template-admins", "scopes": ["custom:templates:edit"], "groups": ["admins"]},
    {"name": "course-a-editors", "scopes": ["custom:templates:edit!group=course-a"], "groups": ["course-a-tas"]},
    # everyone may reach the editor page; without a role above it answers 403 with an explanation
    {"name": "user", "scopes": ["self", "access:services!service=templates"]},
]
c.JupyterHub.services = [
    {
        "name": "templates",
        "display": True,
        "url": "http://127.0.0.1:10101",
        "command": [
            sys.executable, "-m", "multiplespawner.editor", f"--catalogue-dir={catalogue_dir}",
            # the same allow-lists as the spawner's, and the bounds for course editors
            f"--TemplateEditorApp.allowed_spawner_classes={SPAWNER_CLASSES!r}",
            "--TemplateEditorApp.allowed_configurer_classes=[]",
            '--TemplateEditorApp.course_editor_max_resources={"memory_mb": 2048, "cpu": 2}',
            "--TemplateEditorApp.course_editor_max_lifetime_minutes=480",
            "--TemplateEditorApp.course_editor_environment_pattern=COURSE_[A-Z0-9_]+",
        ],
        "oauth_client_allowed_scopes": ["custom:templates:edit"],
        "oauth_no_confirm": True,
    }
]
