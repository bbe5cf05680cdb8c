"""HeaderAuthenticator (skeleton; filled in by the header-authentication work)."""

from jupyterhub.auth import Authenticator


class HeaderAuthenticator(Authenticator):
    """Authenticate users from headers set by a trusted front proxy."""
