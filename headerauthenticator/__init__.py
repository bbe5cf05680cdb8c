"""Log users in from identity headers set by a trusted front proxy."""

from .authenticator import HeaderAuthenticator

__all__ = ["HeaderAuthenticator"]
