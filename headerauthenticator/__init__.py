"""Log users in from identity headers set by a trusted front proxy."""

from .authenticator import HeaderAuthenticator
from .parsers import HeaderParseError, JSONParser, Parser, RegexUsernameParser

__all__ = ["HeaderAuthenticator", "HeaderParseError", "JSONParser", "Parser", "RegexUsernameParser"]
