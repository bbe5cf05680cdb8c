"""Parsers that turn one header value into the value the authenticator keeps.

The configuration surface is the published HeaderAuthenticator's: ``Parser`` passes the
value through, ``RegexUsernameParser`` extracts a username with a one-group regex and
``JSONParser`` decodes JSON. Unlike the published parsers, a value that cannot be parsed
raises :class:`HeaderParseError` carrying the HTTP status to answer with, so a bad header
becomes a clear 4xx instead of a silent ``None`` or a 500.

Parsers never log header values above DEBUG.
"""

import json
import math
import re

from traitlets import CRegExp, Dict, Int
from traitlets.config import LoggingConfigurable


class HeaderParseError(ValueError):
    """A header value that a parser refuses. ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Parser(LoggingConfigurable):
    """Return the header value unchanged (a ``str``).

    Subclasses override :meth:`parse`. Contract: take the raw header value (``str``, never
    empty: missing headers are handled before parsing) and return the value to keep, or raise
    :class:`HeaderParseError`. Returning ``None`` (the published parsers' failure signal) is
    treated as "no usable value".
    """

    def validate(self) -> None:
        """Raise ``ValueError`` if this parser's configuration cannot work (checked at start-up)."""

    def parse(self, data: str):
        return data


class RegexUsernameParser(Parser):
    """Extract the username from the header with a regular expression of exactly one group.

    e.g. ``username_extract_regex = r"([a-zA-Z0-9_.+-]+@[a-zA-Z0-9-]+\\.[a-zA-Z0-9-.]+)"``
    finds an e-mail address inside an OpenID URL or an X.509 subject, and
    ``replace_extract_chars = {"@": "_", ".": "_"}`` turns it into a Unix-friendly name.
    """

    username_extract_regex = CRegExp(
        None,
        allow_none=True,
        help="""Regular expression with exactly one capturing group; the group's match (first
        match found with ``re.search``) becomes the username. A header that does not match is
        refused with 403. Required when this parser is used.""",
    ).tag(config=True)

    replace_extract_chars = Dict(
        default_value={},
        allow_none=True,
        help="""Replacements applied, in order, to the extracted username: each key (a
        substring) is replaced by its value, e.g. ``{"@": "_", ".": "_"}``.""",
    ).tag(config=True)

    @property
    def _pattern(self):
        # published configs assign the class attribute directly
        # (``RegexUsernameParser.username_extract_regex = "..."``), replacing the trait by a str
        pattern = self.username_extract_regex
        return re.compile(pattern) if isinstance(pattern, str) else pattern

    def validate(self) -> None:
        pattern = self._pattern
        if pattern is None:
            raise ValueError("RegexUsernameParser.username_extract_regex must be set")
        if pattern.groups != 1:
            raise ValueError(
                "RegexUsernameParser.username_extract_regex must have exactly one group, "
                f"{pattern.pattern!r} has {pattern.groups}"
            )

    def parse(self, data: str) -> str:
        pattern = self._pattern
        if not isinstance(data, str):
            raise HeaderParseError(400, "the username header is not text")
        match = pattern.search(data)
        if not match or not match.group(1):
            self.log.debug("RegexUsernameParser: %r does not match %r", data, pattern.pattern)
            raise HeaderParseError(
                403, "The identity sent by the front proxy does not contain a valid username."
            )
        username = match.group(1)
        for old, new in (self.replace_extract_chars or {}).items():
            username = username.replace(old, new)
        return username


class JSONParser(Parser):
    """Decode the header value as JSON; any JSON value (object, list, string, number) is kept."""

    max_depth = Int(
        32,
        help="""Deepest nesting of lists and objects accepted in the header's JSON; deeper
        values are refused with 400 before they are decoded.""",
    ).tag(config=True)

    def parse(self, data):
        if isinstance(data, (bytes, bytearray)):
            data = data.decode("utf-8", "replace")
        if not isinstance(data, str):
            raise HeaderParseError(400, "the header value is not text")
        return loads_bounded(data, self.max_depth, "the header value")


_JSON_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth(text: str) -> int:
    """The deepest nesting of lists and objects in ``text``, strings skipped (linear time).

    Exact for valid JSON; for text that is not JSON it may be an overestimate, which only
    turns one 400 into another.
    """
    depth = deepest = 0
    for match in _JSON_NESTING.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def loads_bounded(text: str, max_depth: int, what: str):
    """``json.loads`` for untrusted text: :class:`HeaderParseError` (400) naming ``what`` if
    it nests lists/objects deeper than ``max_depth`` (checked first, so the decoder never
    recurses deeply) or is not standard JSON (``NaN``, ``Infinity`` and numbers that overflow
    to infinity are refused too: they would make the hub's REST API answer invalid JSON). The
    message gives a position only: the text may be secret."""
    if json_depth(text) > max_depth:
        raise HeaderParseError(400, f"{what} is nested more than {max_depth} levels deep")
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as e:
        raise HeaderParseError(400, f"{what} is not valid JSON ({_where(e)})") from None


class _NotJSON(ValueError):
    """Python's decoder accepts it, JSON does not (NaN, Infinity, 1e999)."""


def _refuse_constant(name: str):
    raise _NotJSON(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotJSON("a number out of range")
    return value


def _where(error: Exception) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at character {error.pos}"
    if isinstance(error, _NotJSON):
        return str(error)
    return type(error).__name__


def split_groups(value) -> list[str]:
    """Group names from a groups header: a JSON list, or names separated by commas/semicolons."""
    if isinstance(value, list):
        items = value
    else:
        text = str(value).strip()
        if text.startswith("["):
            items = loads_bounded(text, 1, "the groups header (a JSON list of names)")
            if not isinstance(items, list):
                raise HeaderParseError(400, "the groups header is not a JSON list")
        else:
            items = re.split(r"[,;]", text)
    names = []
    for item in items:
        if not isinstance(item, str):
            raise HeaderParseError(400, "the groups header must list group names (strings)")
        item = item.strip()
        if item and item not in names:
            names.append(item)
    return names
