"""Pure helpers: turn user data and configuration into safe LDAP filters, DNs and values.

Nothing here talks to a server. The safety rules live here:

* every value put into a search filter goes through ``escape_filter_chars``;
* every value put into a DN goes through ``escape_rdn`` (user data is never DN syntax);
* attribute names from user data must be in the configured ``submit_attribute_names``;
* every value taken from a user (submitted data, user/spawner attributes) is a non-empty string
  of at most ``max_value_length`` characters without control characters;
* error messages name attributes, never quote values, except in ``UserDataError.shown``.
"""

import re

from ldap3.utils.ciDict import CaseInsensitiveDict
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from .config import (
    LDAP_FIRST_SEARCH_ATTRIBUTE_QUERY,
    LDAP_SEARCH_ATTRIBUTE_QUERY,
    SPAWNER_ATTRIBUTE,
    SPAWNER_SUBMIT_DATA,
    SPAWNER_USER_ATTRIBUTE,
)
from .errors import LDAPConfigError, UserDataError

LDAP_METHODS = (LDAP_SEARCH_ATTRIBUTE_QUERY, LDAP_FIRST_SEARCH_ATTRIBUTE_QUERY)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCALARS = (str, int, float)


def shorten(value, limit: int = 40) -> str:
    """``repr`` of a value cut to ``limit`` characters, for messages that may echo user data."""
    text = str(value)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def check_value(name: str, value, max_length: int) -> str:
    """Return ``value`` as a string fit for the directory, or raise :class:`UserDataError`."""
    if isinstance(value, bool) or not isinstance(value, _SCALARS):
        raise UserDataError(f"the value for {name} is not text")
    text = str(value)
    if not text.strip():
        raise UserDataError(f"the value for {name} is empty")
    if len(text) > max_length:
        raise UserDataError(f"the value for {name} is longer than {max_length} characters")
    if _CONTROL.search(text):
        raise UserDataError(f"the value for {name} contains control characters")
    return text


def resolve_path(obj, path: str):
    """Follow a dotted ``path`` through attributes and dict keys; ``None`` where it ends."""
    for part in path.split("."):
        if obj is None:
            return None
        if isinstance(obj, dict):
            obj = obj.get(part)
        else:
            obj = getattr(obj, part, None)
    return obj


def parse_submitted(value, *, replace: dict, strip_chars, allowed_names, max_length: int) -> CaseInsensitiveDict:
    """Parse submitted user data into ``{attribute: value}``.

    ``value`` is a dict of pairs, or a string of ``name=value`` pairs: ``replace`` is applied,
    ``strip_chars`` are stripped from both ends, and the string is split on the replacement
    values (``+`` when ``replace`` is empty). Attribute names are matched case-insensitively
    against ``allowed_names`` and returned in the configured spelling.
    """
    allowed = {name.lower(): name for name in allowed_names}
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, str):
        for old, new in replace.items():
            value = value.replace(old, new)
        value = value.strip("".join(strip_chars))
        separators = sorted(set(replace.values()) or {"+"}, key=len, reverse=True)
        parts = re.split("|".join(re.escape(s) for s in separators if s), value) if value else []
        pairs = []
        for part in parts:
            name, eq, item = part.partition("=")
            if not eq:
                raise UserDataError(
                    "a field of the submitted data is not of the form name=value",
                    shown=f"{shorten(part)} is not of the form name=value",
                )
            pairs.append((name.strip(), item))
    else:
        raise UserDataError("the login did not provide the account details the directory needs")
    result = CaseInsensitiveDict()
    for name, item in pairs:
        canonical = allowed.get(str(name).lower())
        if canonical is None:
            raise UserDataError(
                "the submitted data names an attribute outside LDAP.submit_attribute_names",
                shown=f"the attribute {shorten(name)} is not accepted",
            )
        if canonical in result:
            raise UserDataError(f"the attribute {canonical} is given more than once")
        result[canonical] = check_value(canonical, item, max_length)
    if not result:
        raise UserDataError("the login did not provide the account details the directory needs")
    return result


def first_or_all(values):
    """A single LDAP value as itself, several as a list."""
    if isinstance(values, list):
        return values[0] if len(values) == 1 else list(values)
    return values


def dynamic_values(dynamic_attributes: dict, sources: dict, max_length: int) -> dict:
    """Compute ``{name: value}`` for every dynamic attribute whose source has a value.

    ``sources`` maps method constants to the submitted pairs, the spawner, the user, and (once
    known) the LDAP attributes. Methods whose source is absent are skipped. Values from the
    user, the spawner and the submitted data are checked with :func:`check_value`.
    """
    values = {}
    for name, method in dynamic_attributes.items():
        method, path = (method[0], method[1]) if isinstance(method, list) else (method, name)
        source = sources.get(LDAP_SEARCH_ATTRIBUTE_QUERY if method in LDAP_METHODS else method)
        if source is None:
            continue
        if method in LDAP_METHODS:
            found = source.get(path)
            if not found:
                continue
            values[name] = found[0] if method == LDAP_FIRST_SEARCH_ATTRIBUTE_QUERY else first_or_all(found)
            continue
        found = source.get(path) if method == SPAWNER_SUBMIT_DATA else resolve_path(source, path)
        if found is None or found == "":
            continue
        values[name] = check_value(name, found, max_length)
    return values


def initial_sources(submitted, spawner) -> dict:
    """The sources known before anything is read from the directory."""
    return {
        SPAWNER_SUBMIT_DATA: submitted,
        SPAWNER_ATTRIBUTE: spawner,
        SPAWNER_USER_ATTRIBUTE: spawner.user,
    }


class _Strict(dict):
    def __missing__(self, key):
        raise LDAPConfigError(f"placeholder {{{key}}} has no value (see LDAP.dynamic_attributes)")


def fill(template, values: dict):
    """Fill ``{name}`` placeholders in a template (str, or dict/list of them) from ``values``."""
    if isinstance(template, str):
        try:
            return template.format_map(_Strict(values))
        except (ValueError, IndexError, AttributeError) as e:
            raise LDAPConfigError(f"template {template!r} is not a valid format string: {e}") from e
    if isinstance(template, dict):
        return {k: fill(v, values) for k, v in template.items()}
    if isinstance(template, (list, tuple)):
        return [fill(v, values) for v in template]
    return template


def match_filter(object_classes, identity: dict) -> str:
    """``(&(objectClass=..)...(attr=value)...)`` with every value escaped."""
    terms = [f"(objectClass={escape_filter_chars(oc)})" for oc in object_classes]
    terms += [f"({name}={escape_filter_chars(str(value))})" for name, value in identity.items()]
    return f"(&{''.join(terms)})"


def build_dn(rdn: list[tuple[str, str]], base_dn: str) -> str:
    """``name=value+name=value,<base_dn>`` with every value escaped (RFC 4514)."""
    return "+".join(f"{name}={escape_rdn(str(value))}" for name, value in rdn) + "," + base_dn
