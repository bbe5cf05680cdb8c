"""JupyterHub behind nginx (nginx.conf in this directory) with HeaderAuthenticator.

Servers start with LocalProcessSpawner, so alice must also be a Unix user on this host.

Run from this directory, with the secret that hub-secret.conf gives nginx:
    export JUPYTERHUB_HEADER_AUTH_SECRET=<same hex string as in hub-secret.conf>
    export JUPYTERHUB_CRYPT_KEY=$(openssl rand -hex 32)
    jupyterhub -f jupyterhub_config.py
then browse to http://127.0.0.2:8080/ and log in to nginx as alice.
"""

from headerauthenticator import JSONParser

c = get_config()  # noqa: F821

# JupyterHub's proxy listens on loopback only: everyone goes through nginx.
c.JupyterHub.bind_url = "http://127.0.0.1:8000"
c.JupyterHub.authenticator_class = "header"

c.HeaderAuthenticator.trusted_proxy_ips = ["127.0.0.2"]  # nginx's proxy_bind address
# c.HeaderAuthenticator.shared_secret comes from $JUPYTERHUB_HEADER_AUTH_SECRET; without it the
# hub refuses to start (addresses alone cannot tell nginx from a local process).
c.HeaderAuthenticator.allowed_headers = {"auth": "Remote-User", "data": "X-User-Data"}
c.HeaderAuthenticator.header_parser_classes = {"data": JSONParser}
c.HeaderAuthenticator.enable_auth_state = True
c.HeaderAuthenticator.spawner_shared_headers = ["X-User-Data"]
c.HeaderAuthenticator.groups_header = "X-User-Groups"
c.HeaderAuthenticator.manage_groups = True
c.HeaderAuthenticator.admin_groups = {"hubadmins"}
c.HeaderAuthenticator.user_external_allow_attributes = ["data"]

c.Authenticator.allowed_users = {"alice"}
c.Authenticator.blocked_users = {"root"}
