"""Exceptions: what went wrong in the directory, and what the user is told about it.

The LDAP client raises :class:`DirectoryError` subclasses (no user-facing wording), or
:class:`LDAPConfigError` for options ldap3 cannot use. The hook turns every failure into an
:class:`LDAPSpawnError`, a JupyterHub ``SpawnException``: the spawn stops, the user sees
``message`` on the spawn page / in the REST answer, and the operator's log line carries the
detail (``log_message``).

Log lines above DEBUG never carry values from the user (submitted data, DNs built from it):
``str()`` of every exception here is written for the log; only :class:`UserDataError` has a
separate ``shown`` text, which may quote the user's own data back to them.
"""

try:
    from jupyterhub.spawner import SpawnException
except ImportError:  # JupyterHub 5 has none: LDAPSpawnError is then a plain tornado HTTPError
    SpawnException = None
    from tornado.web import HTTPError


class DirectoryError(Exception):
    """A directory operation failed. ``detail`` is for the operator's log."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class DirectoryUnavailable(DirectoryError):
    """No connection: server down, unreachable, timed out, or TLS verification failed."""


class DirectoryBindRefused(DirectoryError):
    """The server refused the hub's credentials."""


class DirectoryResultError(DirectoryError):
    """The server answered an operation with a non-success result (``result`` is its name)."""

    def __init__(self, result: str, detail: str):
        super().__init__(detail)
        self.result = result


class CounterContention(DirectoryError):
    """The counter kept changing under us for ``counter_max_attempts`` attempts."""


class LDAPConfigError(Exception):
    """The hook's configuration cannot work (operator's problem, not the user's)."""


class UserDataError(ValueError):
    """The user's data cannot be used for a directory entry.

    ``str(error)`` says what is wrong without quoting the data (for the log); ``shown`` may
    quote it (for the user, who sent it). ``shown`` defaults to the same text."""

    def __init__(self, message: str, shown: str | None = None):
        super().__init__(message)
        self.shown = shown or message


class LDAPSpawnError(SpawnException or HTTPError):
    """Stops the spawn; JupyterHub shows ``message`` to the user and logs ``log_message``.

    On JupyterHub 5 (no ``SpawnException``) it is an ``HTTPError`` whose tornado
    ``log_message`` is the user's ``message`` (what JupyterHub 5 answers with), and ``str()``
    keeps the operator's detail for the log.
    """

    def __init__(self, message: str, *, reason: str, log_message: str = "", status_code: int = 500):
        if SpawnException is None:
            super().__init__(status_code, message)
            self.message, self.reason = message, reason
        else:
            super().__init__(message, reason=reason, log_message=log_message, status_code=status_code)
        self.detail = log_message or message

    @property
    def jupyterhub_message(self) -> str:
        return self.message

    def __str__(self) -> str:
        return self.detail


UNAVAILABLE_MESSAGE = (
    "Your server cannot start because the user directory (LDAP) is not reachable right now. "
    "Please try again in a few minutes; if it keeps failing, contact the service administrators."
)
MISCONFIGURED_MESSAGE = (
    "Your server cannot start because the hub's user-directory (LDAP) setup is broken. "
    "The service administrators have been notified in the hub log; please contact them."
)
BUSY_MESSAGE = (
    "Your server cannot start because too many accounts are being created at once. "
    "Please try again in a minute."
)


def spawn_error(exc: Exception, user: str) -> LDAPSpawnError:
    """Map a failure of the hook for ``user`` to the spawn error the hub reports."""
    if isinstance(exc, UserDataError):
        return LDAPSpawnError(
            f"Your account cannot be set up in the user directory: {exc.shown}",
            reason="ldap_user_data",
            log_message=f"LDAP: refused data of user {user!r}: {exc}",
            status_code=400,
        )
    if isinstance(exc, DirectoryUnavailable):
        message, status, reason = UNAVAILABLE_MESSAGE, 503, "ldap_unavailable"
    elif isinstance(exc, CounterContention):
        message, status, reason = BUSY_MESSAGE, 503, "ldap_busy"
    else:
        message, status, reason = MISCONFIGURED_MESSAGE, 500, "ldap_error"
    kind = type(exc).__name__
    return LDAPSpawnError(
        message,
        reason=reason,
        log_message=f"LDAP: setting up the entry of user {user!r} failed ({kind}): {exc}",
        status_code=status,
    )
