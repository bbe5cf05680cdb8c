"""The ``LDAP`` configurable: every option of the hook, and the published method constants.

The surface is the published ``ldap-hooks`` one, so existing ``jupyterhub_config.py`` files keep
working. Options can be set in either style; when both are used, ``c.LDAP.*`` wins::

    LDAP.url = "ldaps://ldap.example.org"          # published style: class attributes
    c.LDAP.url = "ldaps://ldap.example.org"        # traitlets config

A class attribute replaces the trait on the class, as Python does, so a config file can read it
back (the published example builds ``search_attribute_queries`` from ``LDAP.base_dn``). When the
first ``LDAP`` instance is made, such values are taken back off the class, the traits restored,
and the values applied to the instance where ``c.LDAP.*`` (or a keyword) does not set the
option, so they are validated like any other configuration.
"""

import copy
import re

from traitlets import Bool, Dict, Float, Int, List, TraitError, Tuple, Unicode, Union, validate
from traitlets.config import LoggingConfigurable

# Where a dynamic attribute takes its value from (published values, kept as-is).
SPAWNER_SUBMIT_DATA = "1"
LDAP_SEARCH_ATTRIBUTE_QUERY = "2"
SPAWNER_ATTRIBUTE = "3"
SPAWNER_USER_ATTRIBUTE = "4"
LDAP_FIRST_SEARCH_ATTRIBUTE_QUERY = "5"
DYNAMIC_ATTRIBUTE_METHODS = (
    SPAWNER_SUBMIT_DATA,
    LDAP_SEARCH_ATTRIBUTE_QUERY,
    SPAWNER_ATTRIBUTE,
    SPAWNER_USER_ATTRIBUTE,
    LDAP_FIRST_SEARCH_ATTRIBUTE_QUERY,
)

# What to do with a value found by ``search_attribute_queries``.
INCREMENT_ATTRIBUTE = "1"
SEARCH_RESULT_OPERATION_ACTIONS = (INCREMENT_ATTRIBUTE,)

# An attribute description as RFC 4512 allows it (descr or numeric OID), no options.
ATTRIBUTE_NAME = re.compile(r"^(?:[A-Za-z][A-Za-z0-9-]*|\d+(?:\.\d+)+)\Z")


def check_attribute_name(name: str, option: str) -> str:
    """Return ``name`` if it is a valid LDAP attribute name, else raise TraitError naming ``option``."""
    if not isinstance(name, str) or not ATTRIBUTE_NAME.match(name):
        raise TraitError(f"LDAP.{option}: {name!r} is not an LDAP attribute name")
    return name


class LDAP(LoggingConfigurable):
    """Where the directory is, how to reach it, and how a user's entry is found or created."""

    # ---- connection --------------------------------------------------------------------------
    url = Unicode(
        "",
        config=True,
        help="""LDAP server: ``ldap://host[:port]`` (add ``start_tls`` to encrypt),
        ``ldaps://host[:port]``, or a bare host name (plain LDAP on port 389).""",
    )
    user = Unicode(
        "",
        config=True,
        help="DN the hub binds as, e.g. ``cn=admin,dc=example,dc=org``. Empty: anonymous bind.",
    )
    password = Unicode(
        "",
        config=True,
        help="Password for ``user``. Keep it out of world-readable files (e.g. read it from the environment).",
    )
    start_tls = Bool(
        False,
        config=True,
        help="Upgrade ``ldap://`` connections with StartTLS before binding; the certificate is verified.",
    )
    ca_certs_file = Unicode(
        "",
        config=True,
        help="""PEM file with the CA certificates that sign the server's certificate (for
        ``ldaps://`` and ``start_tls``). Empty: the system's trusted CAs. Verification is
        always on: certificate chain and host name (or IP address) must match.""",
    )
    connect_timeout = Float(
        5.0, config=True, help="Seconds to wait for a TCP (and TLS) connection to the server."
    )
    operation_timeout = Float(
        10.0, config=True, help="Seconds to wait for the answer to one LDAP operation."
    )
    pool_size = Int(
        4,
        config=True,
        help="""Worker threads (each with one reused, bound connection) that run the blocking
        ldap3 calls; at most this many LDAP operations are in flight per server.""",
    )

    # ---- where entries live and what they look like --------------------------------------------
    base_dn = Unicode(
        "", config=True, help="DN under which user entries are searched for and created."
    )
    object_classes = List(
        Unicode(),
        config=True,
        help="Object classes of a user entry, e.g. ``['x-certsDistinguishedName', 'posixAccount']``.",
    )
    object_attributes = Dict(
        value_trait=Unicode(),
        key_trait=Unicode(),
        config=True,
        help="""Attributes of a new entry: ``{attribute: template}`` where ``{name}``
        placeholders are filled from ``dynamic_attributes``, e.g.
        ``{'uidNumber': '{uidNumber}', 'homeDirectory': '/home/{uid}'}``.""",
    )
    unique_object_attributes = List(
        Unicode(),
        config=True,
        help="""Attributes that identify a user's entry (e.g. ``['uid']``): an entry with the
        configured object classes and these values is this user's entry, found instead of
        created. Empty: every attribute of the submitted data identifies it.""",
    )
    rdn_attributes = List(
        Unicode(),
        config=True,
        help="""Attributes whose values name a new entry (its RDN), e.g. ``['uid']`` for
        ``uid=alice,<base_dn>``. Empty (the published behaviour): every attribute of the
        submitted data, as one multi-valued RDN (``C=DK+...+CN=Name+emailAddress=...``).
        Values are always escaped; never DN syntax.""",
    )

    # ---- user-provided data --------------------------------------------------------------------
    submit_spawner_attribute = Unicode(
        "",
        config=True,
        help="""Dotted path to the data describing the user, starting at the spawner, e.g.
        ``user.data`` or ``user.name``; ``auth_state.<key>`` reads the user's encrypted
        auth_state. The value is a string of ``name=value`` pairs (an X.509 subject such as
        ``/C=DK/CN=Name/emailAddress=a@b.org``) or a dict of them. Empty: no submitted data.""",
    )
    submit_spawner_attribute_keys = Tuple(
        (),
        config=True,
        help="""Keys to follow when ``submit_spawner_attribute`` is a dict, e.g.
        ``('User', 'CERT')`` takes ``data['User']['CERT']``.""",
    )
    replace_object_with = Dict(
        value_trait=Unicode(),
        key_trait=Unicode(),
        config=True,
        help="""Replacements applied to the submitted string before it is split into pairs;
        the replacement values are the separators. ``{'/': '+'}`` turns
        ``/C=DK/CN=Name`` into ``C=DK+CN=Name``. Empty: pairs are separated by ``+``.""",
    )
    name_strip_chars = List(
        Unicode(),
        default_value=["/", "+", "*", ",", ".", "!", " "],
        config=True,
        help="Characters stripped from both ends of the submitted string before it is split.",
    )
    submit_attribute_names = List(
        Unicode(),
        default_value=["C", "ST", "L", "O", "OU", "CN", "emailAddress"],
        config=True,
        help="""Attribute names accepted in submitted data (case-insensitive). Anything else
        there is refused: users cannot choose which attributes go into the directory.""",
    )
    max_value_length = Int(
        128,
        config=True,
        help="Longest submitted or derived value (characters) accepted from a user.",
    )

    # ---- derived values ---------------------------------------------------------------------------
    dynamic_attributes = Dict(
        value_trait=Union([Unicode(), List(Unicode(), minlen=2, maxlen=2)]),
        key_trait=Unicode(),
        config=True,
        help="""Values to compute, ``{name: method}``, used in ``object_attributes`` and
        ``set_spawner_attributes`` placeholders. ``method`` is one of
        ``SPAWNER_SUBMIT_DATA`` (the submitted pairs), ``SPAWNER_ATTRIBUTE`` (an attribute of
        the spawner), ``SPAWNER_USER_ATTRIBUTE`` (of the user), ``LDAP_SEARCH_ATTRIBUTE_QUERY``
        (of the LDAP entry / counter; all values), ``LDAP_FIRST_SEARCH_ATTRIBUTE_QUERY`` (its
        first value). The value is looked up under ``name``; ``[method, 'path']`` looks it
        up under another (dotted) name, e.g. ``{'uid': [SPAWNER_USER_ATTRIBUTE, 'name']}``.""",
    )
    search_attribute_queries = List(
        Dict(),
        config=True,
        help="""Searches run before a new entry is created, each
        ``{'search_base': ..., 'search_filter': ..., 'attributes': [...]}`` and matching at
        most one entry, e.g. the uid counter ``(objectClass=x-nextUserIdentifier)``.""",
    )
    search_result_operations = Dict(
        value_trait=Dict(),
        key_trait=Unicode(),
        config=True,
        help="""What to do with an attribute found by ``search_attribute_queries``:
        ``{'uidNumber': {'action': INCREMENT_ATTRIBUTE, 'modify_dn': 'cn=uidNext,dc=...'}}``
        atomically increments the counter (delete-old/add-new in one modify, retried on
        conflict) and hands the new value to the entry.""",
    )
    set_spawner_attributes = Dict(
        config=True,
        help="""Spawner attributes set after the entry is found or created; string templates
        are filled from ``dynamic_attributes``; dicts are merged into the spawner's dict, e.g.
        ``{'environment': {'NB_USER': '{uid}', 'NB_UID': '{uidNumber}'}}``.""",
    )

    # ---- concurrency -----------------------------------------------------------------------------
    counter_max_attempts = Int(
        50,
        config=True,
        help="How often an increment that lost a race with another spawn is retried before giving up.",
    )
    counter_backoff = Tuple(
        Float(),
        Float(),
        default_value=(0.005, 0.25),
        config=True,
        help="""(first, longest) delay in seconds between counter retries; the delay doubles
        per attempt and a random fraction of it is used (full jitter).""",
    )

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._option_traits = dict(cls.class_traits())
        cls._class_values = {}

    def __init__(self, **kwargs):
        self._adopt_class_values()
        super().__init__(**kwargs)
        configured = set(kwargs)
        for klass in type(self).__mro__:
            if klass.__name__ in self.config:
                configured.update(self.config[klass.__name__])
        for klass in reversed(type(self).__mro__):
            for name, value in klass.__dict__.get("_class_values", {}).items():
                if name not in configured:
                    setattr(self, name, copy.deepcopy(value))

    @classmethod
    def _adopt_class_values(cls) -> bool:
        """Move published-style class attributes into ``_class_values`` and restore the traits.

        Returns whether any class attribute was set since the last call."""
        adopted = False
        for klass in cls.__mro__:
            option_traits = klass.__dict__.get("_option_traits", {})
            for name, trait in option_traits.items():
                value = klass.__dict__.get(name, trait)
                if value is not trait:
                    klass._class_values[name] = value
                    setattr(klass, name, trait)
                    adopted = True
        return adopted

    # ---- validation ------------------------------------------------------------------------------
    @validate("object_attributes")
    def _valid_keys(self, proposal):
        for name in proposal.value:
            check_attribute_name(name, proposal.trait.name)
        return proposal.value

    @validate("unique_object_attributes", "rdn_attributes", "submit_attribute_names")
    def _valid_names(self, proposal):
        for name in proposal.value:
            check_attribute_name(name, proposal.trait.name)
        return proposal.value

    @validate("dynamic_attributes")
    def _valid_dynamic(self, proposal):
        for name, method in proposal.value.items():
            check_attribute_name(name, "dynamic_attributes")
            method = method[0] if isinstance(method, list) else method
            if method not in DYNAMIC_ATTRIBUTE_METHODS:
                raise TraitError(
                    f"LDAP.dynamic_attributes[{name!r}]: {method!r} is not one of the methods"
                    " SPAWNER_SUBMIT_DATA, LDAP_SEARCH_ATTRIBUTE_QUERY, SPAWNER_ATTRIBUTE,"
                    " SPAWNER_USER_ATTRIBUTE, LDAP_FIRST_SEARCH_ATTRIBUTE_QUERY"
                )
        return proposal.value

    @validate("search_attribute_queries")
    def _valid_queries(self, proposal):
        allowed = {"search_base", "search_filter", "attributes"}
        for query in proposal.value:
            if not {"search_base", "search_filter"} <= set(query) or set(query) - allowed:
                raise TraitError(
                    f"LDAP.search_attribute_queries: {query!r} needs search_base and"
                    " search_filter (and optionally attributes), nothing else"
                )
            for name in query.get("attributes", []):
                check_attribute_name(name, "search_attribute_queries")
        return proposal.value

    @validate("search_result_operations")
    def _valid_operations(self, proposal):
        for name, operation in proposal.value.items():
            check_attribute_name(name, "search_result_operations")
            if operation.get("action") not in SEARCH_RESULT_OPERATION_ACTIONS:
                raise TraitError(
                    f"LDAP.search_result_operations[{name!r}]: action must be INCREMENT_ATTRIBUTE"
                )
            if not operation.get("modify_dn"):
                raise TraitError(
                    f"LDAP.search_result_operations[{name!r}]: modify_dn (the counter entry) is required"
                )
        return proposal.value

    @validate("pool_size", "counter_max_attempts", "max_value_length")
    def _positive(self, proposal):
        if proposal.value < 1:
            raise TraitError(f"LDAP.{proposal.trait.name} must be at least 1")
        return proposal.value


LDAP._option_traits = dict(LDAP.class_traits())
LDAP._class_values = {}
