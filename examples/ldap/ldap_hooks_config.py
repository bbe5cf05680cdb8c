"""ldap_hooks settings for a MODI-like directory (loaded by jupyterhub_config.py).

Every user gets an entry ``C=..+ST=..+L=..+O=..+OU=..+CN=..+emailAddress=..,ou=people,<suffix>``
of classes x-certsDistinguishedName + posixAccount, named from the X.509 subject the front proxy
passes in the ``X-Certificate-Subject`` header (kept in auth_state by the header authenticator),
with ``uid`` = the JupyterHub username and ``uidNumber`` taken from the counter entry
``cn=uidNext,<suffix>``. The notebook gets ``NB_USER`` / ``NB_UID`` in its environment.

Connection settings come from the environment so no secret is written here:
LDAP_URL (e.g. ldaps://ldap.example.org), LDAP_SUFFIX, LDAP_BIND_DN, LDAP_PASSWORD,
LDAP_CA_FILE (PEM of the CA that signed the server certificate), LDAP_START_TLS=1.
"""

import os

from ldap_hooks import (
    INCREMENT_ATTRIBUTE,
    LDAP_FIRST_SEARCH_ATTRIBUTE_QUERY,
    SPAWNER_SUBMIT_DATA,
    SPAWNER_USER_ATTRIBUTE,
    setup_ldap_entry_hook,
)

c = get_config()  # noqa: F821

suffix = os.environ.get("LDAP_SUFFIX", "dc=example,dc=org")
c.LDAP.url = os.environ.get("LDAP_URL", "ldaps://ldap.example.org")
c.LDAP.user = os.environ.get("LDAP_BIND_DN", f"cn=admin,{suffix}")
c.LDAP.password = os.environ.get("LDAP_PASSWORD", "")
c.LDAP.ca_certs_file = os.environ.get("LDAP_CA_FILE", "")
c.LDAP.start_tls = os.environ.get("LDAP_START_TLS") == "1"
c.LDAP.base_dn = f"ou=people,{suffix}"

# The X.509 subject "/C=DK/ST=NA/L=NA/O=Org/OU=NA/CN=Full Name/emailAddress=a@b.org"
c.LDAP.submit_spawner_attribute = "auth_state.X-Certificate-Subject"
c.LDAP.replace_object_with = {"/": "+"}
c.LDAP.submit_attribute_names = ["C", "ST", "L", "O", "OU", "CN", "emailAddress"]

c.LDAP.dynamic_attributes = {
    "uid": [SPAWNER_USER_ATTRIBUTE, "name"],
    "emailAddress": SPAWNER_SUBMIT_DATA,
    "uidNumber": LDAP_FIRST_SEARCH_ATTRIBUTE_QUERY,
}
c.LDAP.unique_object_attributes = ["uid"]
c.LDAP.search_attribute_queries = [
    {
        "search_base": suffix,
        "search_filter": "(objectClass=x-nextUserIdentifier)",
        "attributes": ["uidNumber"],
    }
]
c.LDAP.search_result_operations = {
    "uidNumber": {"action": INCREMENT_ATTRIBUTE, "modify_dn": f"cn=uidNext,{suffix}"}
}
c.LDAP.object_classes = ["x-certsDistinguishedName", "posixAccount"]
c.LDAP.object_attributes = {
    "uid": "{uid}",
    "uidNumber": "{uidNumber}",
    "gidNumber": "100",
    "homeDirectory": "/home/{uid}",
}
c.LDAP.set_spawner_attributes = {
    "environment": {"NB_USER": "{uid}", "NB_UID": "{uidNumber}"},
}

c.Spawner.pre_spawn_hook = setup_ldap_entry_hook
