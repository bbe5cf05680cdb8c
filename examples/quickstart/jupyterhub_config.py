"""Quickstart hub: http://127.0.0.1:8000, notebooks as local processes, nothing in the cloud.

Started by ``scripts/run.sh`` from its state folder (SQLite DB, cookie secret and the login
password live there). Log in with any Unix-safe username and the password in
``<state>/password``; the first spawn creates a Unix account of that name. The template
catalogue is the one embedded in multiplespawner: a local-process template always, container
templates when a Docker engine and the notebook image are present.

Environment overrides (for tests and for running a second hub beside the first):
``QUICKSTART_URL`` (public URL, default http://127.0.0.1:8000), ``QUICKSTART_HUB_PORT``
(default 8081), ``QUICKSTART_PROXY_API_PORT`` (default 8001).
"""

import asyncio
import os
import pwd
import re
import secrets
import subprocess
from pathlib import Path

from tornado.web import HTTPError

from multiplespawner.hub_database import sqlite_wal_db_kwargs

c = get_config()  # noqa: F821

state = Path.cwd()
c.JupyterHub.bind_url = os.environ.get("QUICKSTART_URL", "http://127.0.0.1:8000")


def docker_bridge_ip():
    """The Docker bridge's address on this machine, or None without Docker."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "docker0"],
                             capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
    return match.group(1) if match else None


# Notebook containers reach the hub API over the Docker bridge; without Docker it stays on
# loopback. (Start Docker before the hub for the container template to work.)
c.JupyterHub.hub_ip = docker_bridge_ip() or "127.0.0.1"
c.JupyterHub.hub_port = int(os.environ.get("QUICKSTART_HUB_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = (
    f"http://127.0.0.1:{os.environ.get('QUICKSTART_PROXY_API_PORT', '8001')}"
)
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
# the hub commits on its event loop: in write-ahead-log mode it stops waiting for the disk
# (docs/scale.md#the-hubs-database says what that trades)
c.JupyterHub.db_kwargs = sqlite_wal_db_kwargs()
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")

# --- who can log in: any Unix-safe name with the quickstart password ---------------------
password_file = state / "password"
if not password_file.exists():
    password_file.touch(mode=0o600)
    password_file.write_text(secrets.token_urlsafe(12))
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = password_file.read_text().strip()
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {"admin"}
c.Authenticator.username_pattern = r"^[a-z][a-z0-9_-]{0,30}$"
# Notebooks run as the Unix account of the user's name: system accounts (root, daemon, ...)
# cannot log in.
c.Authenticator.blocked_users = {p.pw_name for p in pwd.getpwall() if p.pw_uid < 1000}
print(f"quickstart: log in at {c.JupyterHub.bind_url} with any lower-case name and the password in {password_file}")

# --- where notebooks run: the template catalogue embedded in multiplespawner ---------------
c.JupyterHub.spawner_class = "multiple"


async def ensure_unix_user(spawner):
    """Create the Unix account a local-process notebook runs as, on first spawn."""
    name = spawner.user.name
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        account = None
    if account is not None:
        # A system account (root, daemon, www-data, ...) is never handed to a hub user.
        if account.pw_uid < 1000:
            raise HTTPError(403, f"{name} is a system account on this machine; log in with another name")
        return
    proc = await asyncio.create_subprocess_exec(
        "useradd", "--create-home", "--shell", "/bin/bash", name,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode not in (0, 9):  # 9: created meanwhile by a concurrent spawn
        raise RuntimeError(f"could not create Unix user {name}: {err.decode().strip()}")
    spawner.log.info("quickstart: created Unix user %s", name)


c.Spawner.pre_spawn_hook = ensure_unix_user
c.Spawner.default_url = "/lab"
