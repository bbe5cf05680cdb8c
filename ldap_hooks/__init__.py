"""Pre-spawn hooks that find or create each user's posixAccount entry in LDAP.

Configuration surface of the published ``ldap-hooks`` package (``LDAP`` options and method
constants), with LDAP work off the event loop, escaped filters and DNs, an atomic uid counter
and spawn failures the user can read. See docs/ldap_hooks.md.
"""

from .client import close_clients
from .config import (
    DYNAMIC_ATTRIBUTE_METHODS,
    INCREMENT_ATTRIBUTE,
    LDAP,
    LDAP_FIRST_SEARCH_ATTRIBUTE_QUERY,
    LDAP_SEARCH_ATTRIBUTE_QUERY,
    SEARCH_RESULT_OPERATION_ACTIONS,
    SPAWNER_ATTRIBUTE,
    SPAWNER_SUBMIT_DATA,
    SPAWNER_USER_ATTRIBUTE,
)
from .errors import LDAPSpawnError
from .hooks import EntryResult, chain_hooks, hello_hook, setup_ldap_entry_hook

__all__ = [
    "DYNAMIC_ATTRIBUTE_METHODS",
    "INCREMENT_ATTRIBUTE",
    "LDAP",
    "LDAP_FIRST_SEARCH_ATTRIBUTE_QUERY",
    "LDAP_SEARCH_ATTRIBUTE_QUERY",
    "SEARCH_RESULT_OPERATION_ACTIONS",
    "SPAWNER_ATTRIBUTE",
    "SPAWNER_SUBMIT_DATA",
    "SPAWNER_USER_ATTRIBUTE",
    "EntryResult",
    "LDAPSpawnError",
    "chain_hooks",
    "close_clients",
    "hello_hook",
    "setup_ldap_entry_hook",
]
