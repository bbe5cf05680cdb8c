"""A MODI-like hub: header login from a front proxy, LDAP accounts made at first spawn.

The front proxy (see examples/header-nginx) authenticates the person, sets ``Remote-User`` and
``X-Certificate-Subject`` and forwards to the hub. At each spawn ldap_hooks finds or creates the
user's posixAccount (settings in ldap_hooks_config.py) and passes NB_USER / NB_UID to the
notebook, whose image (or batch job) runs it as that Unix identity.

Run (hub state in the current directory)::

    export JUPYTERHUB_CRYPT_KEY=$(openssl rand -hex 32)
    export LDAP_URL=ldaps://ldap.example.org LDAP_CA_FILE=/etc/ssl/ldap-ca.pem LDAP_PASSWORD=...
    jupyterhub -f examples/ldap/jupyterhub_config.py
"""

c = get_config()  # noqa: F821

c.JupyterHub.authenticator_class = "header"
c.HeaderAuthenticator.enable_auth_state = True
c.HeaderAuthenticator.allowed_headers = {
    "auth": "Remote-User",
    "subject": "X-Certificate-Subject",
}
c.HeaderAuthenticator.trusted_proxy_ips = ["127.0.0.1"]
c.Authenticator.allow_all = True

# The notebook runs as the hub's user here; a production MODI uses a container or batch spawner
# that starts the notebook as NB_USER/NB_UID (e.g. DockerSpawner with a docker-stacks image).
c.JupyterHub.spawner_class = "simple"

load_subconfig("ldap_hooks_config.py")  # noqa: F821
