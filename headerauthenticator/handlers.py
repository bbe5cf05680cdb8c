"""Tornado handlers the HeaderAuthenticator registers under the hub prefix.

* ``/login``: logs in whoever the trusted front proxy's headers name, then redirects to a
  ``next`` URL validated by JupyterHub's own ``get_next_url`` (no open redirect).
* ``/logout``: JupyterHub's logout, then a redirect to the front proxy's logout URL if set.
* ``/user-data`` (and ``/set-user-data``, the published name): the front proxy POSTs a JSON
  object of extra user data that is merged into the user's encrypted auth_state.
"""

import json

from jupyterhub.handlers import BaseHandler
from jupyterhub.handlers.login import LogoutHandler
from tornado import web

from .parsers import HeaderParseError, loads_bounded


class HeaderLoginHandler(BaseHandler):
    """Log in from the front proxy's headers on GET or POST.

    The headers are authoritative on every visit: a browser that still carries another user's
    hub cookie is logged in as the user the proxy names now.
    """

    async def get(self):
        await self._login()

    async def post(self):
        await self._login()

    async def _login(self):
        # authenticate() raises HTTPError with a clear message for untrusted peers and bad
        # headers; None here means JupyterHub's own checks (blocked/allowed/name) refused.
        user = await self.login_user({})
        if user is None:
            raise web.HTTPError(
                403,
                "The front proxy identified you, but this hub does not allow your account. "
                "Contact the hub's administrators if you think this is wrong.",
            )
        self.redirect(self.get_next_url(user))


class HeaderLogoutHandler(LogoutHandler):
    """Clear the hub cookie, then send the browser to the front proxy's logout URL, if any.

    Without ``logout_redirect_url`` the hub's own logout page is shown; the front proxy's
    session stays valid, so visiting the hub again logs the person straight back in.
    """

    async def render_logout_page(self):
        url = self.authenticator.logout_redirect_url
        if url:
            self.redirect(url, permanent=False)
        else:
            await super().render_logout_page()


@web.stream_request_body
class UserDataHandler(BaseHandler):
    """Accept extra user data from the trusted front proxy and keep it in auth_state.

    Contract: ``POST`` with ``Content-Type: application/json`` and a JSON object whose keys
    are all in ``HeaderAuthenticator.user_external_allow_attributes``, at most
    ``max_user_data_size`` bytes and ``max_user_data_depth`` levels deep, from a trusted peer
    with the shared secret, carrying the username header of a user who
    has logged in before. The values are merged into that user's auth_state, which persists
    in the hub database (encrypted). Answers 200 with the stored keys.

    The user is named by the proxy's header, not by a hub cookie, so the hub's XSRF cookie
    check does not apply; requiring ``application/json`` keeps browsers from forging the
    request cross-site (that content type needs a CORS preflight the hub never grants).
    Refusals are 4xx with a JSON body ``{"status": ..., "message": ...}`` and store nothing.

    The body is streamed: at most ``max_user_data_size`` bytes of it are kept in memory,
    whatever the client sends.
    """

    def check_xsrf_cookie(self):
        return

    async def prepare(self):
        self._body = bytearray()  # before anything can fail: the body arrives regardless
        self._body_too_large = False
        await super().prepare()

    def data_received(self, chunk: bytes) -> None:
        if len(self._body) + len(chunk) > self.authenticator.max_user_data_size:
            self._body_too_large = True
            self._body.clear()
        elif not self._body_too_large:
            self._body += chunk

    def write_error(self, status_code, **kwargs):
        """Refusals as JSON ``{"status": ..., "message": ...}`` for the front proxy, which is
        the caller here (the hub's HTML error pages drop the message of a 404)."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        message = error.log_message if isinstance(error, web.HTTPError) and error.log_message else self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": message}))

    async def post(self):
        authenticator = self.authenticator
        allowed = authenticator.user_external_allow_attributes
        if not allowed:
            raise web.HTTPError(404, "Posting user data is not enabled on this hub.")
        authenticator.check_trusted_request(self)
        content_type = self.request.headers.get("Content-Type", "").split(";", 1)[0].strip()
        if content_type.lower() != "application/json":
            raise web.HTTPError(415, "User data must be sent as application/json.")
        username = authenticator.normalize_username(authenticator.username_from_request(self))
        if self._body_too_large:
            raise web.HTTPError(
                413, f"User data is larger than {authenticator.max_user_data_size} bytes."
            )
        try:
            data = loads_bounded(self._body.decode("utf-8"), authenticator.max_user_data_depth, "User data")
        except UnicodeDecodeError:
            raise web.HTTPError(400, "User data is not UTF-8 text.") from None
        except HeaderParseError as e:
            raise web.HTTPError(e.status, f"{e.message}.") from None
        if not isinstance(data, dict) or not data:
            raise web.HTTPError(400, "User data must be a non-empty JSON object.")
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise web.HTTPError(
                400,
                f"Not accepted as user data: {', '.join(unknown)[:200]}. "
                f"Accepted keys: {', '.join(allowed)}.",
            )
        user = self.find_user(username)
        if user is None:
            raise web.HTTPError(404, "No such user on this hub; log in first.")
        state = await user.get_auth_state() or {}
        state.update(data)
        await user.save_auth_state(state)
        self.log.info("Stored user data keys %s for %s", sorted(data), user.name)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"user": user.name, "stored": sorted(data)}))
