"""The one way MultipleSpawner stops a spawn, worded for the user who asked.

Every user-facing failure is a :class:`SpawnError`: :func:`refused` (400) or :func:`failed`
(500), or a subclass with its own status (``machines``' ``MachineStepError``, ``PoolFullError``).
All are JupyterHub ``SpawnException``\\ s: the REST API answers with their status and
``message``, the spawn form shows ``message`` above the form again, the progress stream ends with
``Spawn failed: <message>`` and the spawn-pending page shows ``message``; the hub logs
``log_message`` without a traceback. (JupyterHub shows ``jupyterhub_message`` on its pages and
in the progress stream and ``str(exception)`` otherwise, which for a ``SpawnException`` is
``"<status> SpawnException(reason=...): ..."``; :class:`SpawnError` sets it to ``message``.)

JupyterHub counts a ``SpawnException`` as a handled failure: it does not add to
``c.Spawner.consecutive_failure_limit``, so one broken template cannot make the hub exit.
"""

from __future__ import annotations

try:
    from jupyterhub.spawner import SpawnException
except ImportError:  # JupyterHub 5 has no SpawnException; this is JupyterHub 6's contract
    from tornado.web import HTTPError

    class SpawnException(HTTPError):
        """JupyterHub 6's ``SpawnException`` (message, reason, log_message, status_code) for
        JupyterHub 5, which answers with ``log_message``: it is the user's ``message`` there, and
        the operator's detail is what ``str()`` gives the log."""

        def __init__(self, message, *, reason, log_message="", message_html="", status_code=400):
            super().__init__(status_code, message)  # tornado's log_message: what JupyterHub 5 shows
            self.message, self.reason, self.message_html = message, reason, message_html
            self.detail = log_message or message

        def __str__(self) -> str:
            return self.detail


class SpawnError(SpawnException):
    """A ``SpawnException`` whose ``message`` is what JupyterHub shows on every page."""

    @property
    def jupyterhub_message(self) -> str:
        return self.message


def refused(message: str) -> SpawnError:
    """A choice (form fields or REST ``user_options``) that cannot be granted: 400, nothing started.

    JupyterHub's convention for invalid launch parameters (``SpawnException``, status 400).
    """
    return SpawnError(message, reason="invalid_user_options", status_code=400)


def failed(message: str, reason: str, log_message: str = "") -> SpawnError:
    """A spawn that was accepted but could not be carried out (500); ``reason`` labels metrics."""
    return SpawnError(message, reason=reason, log_message=log_message, status_code=500)


def user_facing(error: BaseException) -> BaseException:
    """``error``, with ``jupyterhub_message`` set if it is a ``SpawnException`` that has none.

    Spawn exceptions raised by other code (e.g. the machine path) then read as their
    ``message`` on the hub's pages and progress stream too.
    """
    if isinstance(error, SpawnException) and not getattr(error, "jupyterhub_message", None):
        error.jupyterhub_message = error.message
    return error
