"""A MODI-like hub: header login from a front proxy, LDAP accounts made at first spawn.

The front proxy authenticates the person, sets ``Remote-User`` and ``X-Certificate-Subject``
(the X.509 subject in the ``/C=../CN=..`` form) and the shared secret, and forwards to the
hub, as docs/deploy-behind-proxy.md describes; examples/header-nginx has a runnable nginx. It
must set or clear both identity headers on every request, e.g. in nginx next to
``hub-identity.conf``::

    proxy_set_header X-Certificate-Subject $ssl_client_s_dn_legacy;   # with ssl_verify_client on

At each spawn ldap_hooks finds or creates the user's posixAccount (settings in
ldap_hooks_config.py) and passes NB_USER / NB_UID to the notebook, whose image (or batch job)
runs it as that Unix identity.

Run (hub state in the current directory), with the secret the front proxy sends::

    export JUPYTERHUB_HEADER_AUTH_SECRET=<the front proxy's $hub_proxy_secret>
    export JUPYTERHUB_CRYPT_KEY=$(openssl rand -hex 32)
    export LDAP_URL=ldaps://ldap.example.org LDAP_CA_FILE=/etc/ssl/ldap-ca.pem LDAP_PASSWORD=...
    jupyterhub -f examples/ldap/jupyterhub_config.py
"""

c = get_config()  # noqa: F821

# JupyterHub's proxy listens on loopback only: everyone goes through the front proxy.
c.JupyterHub.bind_url = "http://127.0.0.1:8000"
c.JupyterHub.authenticator_class = "header"
c.HeaderAuthenticator.enable_auth_state = True
c.HeaderAuthenticator.allowed_headers = {
    "auth": "Remote-User",
    "subject": "X-Certificate-Subject",
}
# The front proxy's own source address (nginx: proxy_bind 127.0.0.2), not 127.0.0.1, from
# which every local process connects. On one host addresses cannot tell the proxy from the
# users' notebook servers: the shared secret ($JUPYTERHUB_HEADER_AUTH_SECRET) can, so the
# authenticator does not start without it.
c.HeaderAuthenticator.trusted_proxy_ips = ["127.0.0.2"]
c.Authenticator.allow_all = True

# The notebook runs as the hub's user here; a production MODI uses a container or batch spawner
# that starts the notebook as NB_USER/NB_UID (e.g. DockerSpawner with a docker-stacks image).
c.JupyterHub.spawner_class = "simple"

load_subconfig("ldap_hooks_config.py")  # noqa: F821
