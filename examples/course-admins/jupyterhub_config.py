"""Course admins edit templates while the hub runs (template editor service + RBAC).

Group ``admins`` may edit every template; group ``course-a-tas`` the templates tagged
``course-a``. Everyone may open the editor page (and is told there what permission is missing).
Templates live in ``templates/`` beside this file (copy it to e.g. /etc/jupyterhub/templates
and point both the spawner and the service at it).
"""

import os
import sys
from pathlib import Path

c = get_config()  # noqa: F821

catalogue_dir = os.environ.get("TEMPLATE_CATALOGUE_DIR", str(Path(__file__).parent / "templates"))

c.JupyterHub.spawner_class = "multiple"
c.MultipleSpawner.catalogue_paths = [catalogue_dir]

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
        "command": [sys.executable, "-m", "multiplespawner.editor", f"--catalogue-dir={catalogue_dir}"],
        "oauth_client_allowed_scopes": ["custom:templates:edit"],
        "oauth_no_confirm": True,
    }
]
