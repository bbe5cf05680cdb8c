"""HeaderAuthenticator: log users in from identity headers set by a trusted front proxy.

Configuration is compatible with the published HeaderAuthenticator (``allowed_headers``,
``header_parser_classes``, ``spawner_shared_headers``, ``user_external_allow_attributes``,
``enable_auth_state``); what is new is that headers are believed only from
``trusted_proxy_ips`` (see :mod:`headerauthenticator.trust`) and only with
the front proxy's shared secret (required by default), and every bad input gets a clear
4xx.

Logins go through JupyterHub's ``login_user``, so ``allowed_users``, ``blocked_users``,
``admin_users``, ``allow_all``, username normalisation and ``post_auth_hook`` all apply.
"""

import hmac
import json
import os

from jupyterhub.auth import Authenticator
from tornado import web
from traitlets import Bool, Dict, Instance, Int, List, Set, Type, Unicode, default

from .handlers import HeaderLoginHandler, HeaderLogoutHandler, UserDataHandler
from .parsers import HeaderParseError, Parser, split_groups
from .trust import parse_networks, resolve_peer, trusts_everyone

SECRET_ENV = "JUPYTERHUB_HEADER_AUTH_SECRET"
MIN_SECRET_LENGTH = 16


class HeaderAuthenticator(Authenticator):
    """Authenticate users from headers set by a trusted front proxy."""

    allowed_headers = Dict(
        default_value={"auth": "Remote-User"},
        key_trait=Unicode(),
        value_trait=Unicode(),
        help="""Headers read at login, as ``{key: header name}``. The ``auth`` key is required
        and names the username header. Every other header that is present is parsed with
        ``header_parser_classes[key]`` (default ``Parser``) and stored in auth_state under its
        header name (auth_state must be enabled to keep it). The front proxy must set or clear
        every header listed here on every request, so that a client cannot supply them.""",
    ).tag(config=True)

    header_parser_classes = Dict(
        default_value={"auth": Parser},
        key_trait=Unicode(),
        value_trait=Type(klass=Parser),
        help="""Parser class (or import string) per ``allowed_headers`` key, e.g.
        ``{"auth": RegexUsernameParser, "data": JSONParser}``. Keys without an entry use
        ``Parser`` (value kept as text). Parsers are configured as their own classes, e.g.
        ``c.RegexUsernameParser.username_extract_regex``.""",
    ).tag(config=True)

    header_parsers = Dict(
        key_trait=Unicode(),
        value_trait=Instance(Parser),
        help="Parser instances built from ``header_parser_classes`` (not configurable).",
    )

    spawner_shared_headers = List(
        Unicode(),
        help="""auth_state entries (header names, or keys posted as user data) copied into
        the spawner's environment before each spawn, under the same name. Text is copied as
        is; other JSON values are copied as JSON text.""",
    ).tag(config=True)

    user_external_allow_attributes = List(
        Unicode(),
        help="""Keys the front proxy may POST as a JSON object to ``/hub/user-data`` (also
        ``/hub/set-user-data``); they are stored in the user's auth_state and kept across
        later logins. Empty disables the endpoint. Requires ``enable_auth_state``.""",
    ).tag(config=True)

    trusted_proxy_ips = List(
        Unicode(),
        help="""IP addresses and CIDR networks of the front proxies whose headers are
        believed, e.g. ``["10.0.0.5", "192.168.10.0/24"]``. The address judged is the one
        the hub's own proxy (configurable-http-proxy) saw as its client. A login from any
        other address is refused with 403. Must not be empty or contain 0.0.0.0/0 or ::/0
        unless ``allow_any_proxy`` is True.""",
    ).tag(config=True)

    hub_proxy_ips = List(
        Unicode(),
        ["127.0.0.1", "::1"],
        help="""Addresses from which the hub's own proxy (configurable-http-proxy) connects
        to the hub. Only from these is the right-most X-Forwarded-For entry (the one the proxy
        appends) believed; from any other peer, X-Forwarded-For is ignored and the peer itself
        is judged. Set this when the proxy runs on another host.""",
    ).tag(config=True)

    allow_any_proxy = Bool(
        False,
        help="""Believe identity headers from any address. Start-up refuses an empty or
        everyone-matching ``trusted_proxy_ips`` unless this is True; then a warning is logged.
        Only for hubs that nobody but the front proxy can reach.""",
    ).tag(config=True)

    shared_secret = Unicode(
        help=f"""Secret the front proxy must send in ``shared_secret_header`` with every login
        and user-data request; compared in constant time; at least {MIN_SECRET_LENGTH}
        characters (start-up refuses a shorter one). Defaults to ${SECRET_ENV} so the
        secret need not be written into jupyterhub_config.py. Required unless
        ``require_shared_secret`` is False: addresses cannot tell the front proxy from any
        other process that reaches the hub's ports (the hub's own proxy, CHP, forwards
        everyone's requests from a loopback address; users' notebook servers on the hub host
        can connect to the hub's port directly and write any X-Forwarded-For).""",
    ).tag(config=True)

    require_shared_secret = Bool(
        True,
        help="""Refuse to start without ``shared_secret``. Set False only when nothing but the
        front proxy can reach the hub's ports, the proxy's and the hub's own (firewalled, no
        user code on the hub host or on the hosts in ``hub_proxy_ips``, no
        ``LocalProcessSpawner``); then a warning is logged at every start and logins are
        judged by address alone.""",
    ).tag(config=True)

    shared_secret_header = Unicode(
        "X-Hub-Proxy-Secret",
        help="Header carrying ``shared_secret``. Its value is never logged.",
    ).tag(config=True)

    max_header_size = Int(
        8192,
        help="""Largest accepted value, in bytes, of any header read at login. A larger one
        is refused with 400.""",
    ).tag(config=True)

    max_user_data_size = Int(
        65536,
        help="Largest accepted body, in bytes, of a POST to the user-data endpoint (413 above).",
    ).tag(config=True)

    max_user_data_depth = Int(
        16,
        help="""Deepest nesting of lists and objects accepted in a user-data body (400
        deeper); checked before the JSON is decoded.""",
    ).tag(config=True)

    groups_header = Unicode(
        "",
        help="""Header listing the user's groups: a JSON list, or names separated by commas or
        semicolons. With ``manage_groups = True`` the user's JupyterHub groups are set to
        exactly these at every login (a missing header means no groups). Empty: not used.""",
    ).tag(config=True)

    admin_groups = Set(
        Unicode(),
        help="""Members of any of these groups (from ``groups_header``) are admins; everyone
        else is admin only if listed in ``admin_users``. Re-evaluated at every login.""",
    ).tag(config=True)

    logout_redirect_url = Unicode(
        "",
        help="""After the hub cookie is cleared, redirect here, typically the front proxy's
        logout URL (e.g. ``/Shibboleth.sso/Logout`` or ``/oauth2/sign_out``); otherwise the
        hub's logout page is shown and the front proxy's session stays valid.""",
    ).tag(config=True)

    sensitive_headers = List(
        Unicode(),
        ["Authorization", "Proxy-Authorization", "Cookie"],
        help="""Headers whose values are replaced by ``<redacted>`` even in DEBUG logs (the
        shared secret header always is). Header values are never logged above DEBUG.""",
    ).tag(config=True)

    @default("auto_login")
    def _auto_login_default(self):
        return True

    @default("login_service")
    def _login_service_default(self):
        return "front proxy"

    @default("shared_secret")
    def _shared_secret_default(self):
        return os.environ.get(SECRET_ENV, "")

    @default("header_parsers")
    def _header_parsers_default(self):
        return {
            key: self.header_parser_classes.get(key, Parser)(parent=self)
            for key in self.allowed_headers
        }

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._check_config()

    # ---- start-up checks ----------------------------------------------------------------
    def _check_config(self):
        """Refuse configurations that cannot work or would trust everyone (ValueError)."""
        if "auth" not in self.allowed_headers:
            raise ValueError("HeaderAuthenticator.allowed_headers needs an 'auth' key naming the username header")
        unknown = set(self.header_parser_classes) - set(self.allowed_headers)
        if unknown:
            raise ValueError(
                f"HeaderAuthenticator.header_parser_classes has keys not in allowed_headers: {sorted(unknown)}"
            )
        for parser in self.header_parsers.values():
            parser.validate()
        self._trusted = parse_networks(self.trusted_proxy_ips, "HeaderAuthenticator.trusted_proxy_ips")
        self._hub_proxies = parse_networks(self.hub_proxy_ips, "HeaderAuthenticator.hub_proxy_ips")
        if trusts_everyone(self._trusted):
            if not self.allow_any_proxy:
                raise ValueError(
                    "HeaderAuthenticator would believe identity headers from any address: set "
                    "trusted_proxy_ips to your front proxy's addresses, or set allow_any_proxy = True "
                    "if nothing but the front proxy can reach the hub."
                )
            self._trusted = parse_networks(["0.0.0.0/0", "::/0"], "allow_any_proxy")
            self.log.warning(
                "HeaderAuthenticator.allow_any_proxy is set: identity headers are believed from ANY "
                "address. Anyone who can reach the hub can log in as anyone."
            )
        if self.user_external_allow_attributes and not self.enable_auth_state:
            raise ValueError(
                "HeaderAuthenticator.user_external_allow_attributes stores data in auth_state: "
                "set enable_auth_state = True (and JUPYTERHUB_CRYPT_KEY)."
            )
        extra = [h for k, h in self.allowed_headers.items() if k != "auth"]
        if (extra or self.spawner_shared_headers) and not self.enable_auth_state:
            self.log.warning(
                "HeaderAuthenticator: headers %s are parsed but not kept and nothing reaches the "
                "spawner: enable_auth_state is False.",
                extra,
            )
        self._check_secret()
        if self.groups_header and not self.manage_groups and not self.admin_groups:
            self.log.warning("HeaderAuthenticator.groups_header is set but manage_groups is False: groups are ignored.")
        if self.admin_groups and not self.groups_header:
            self.log.warning(
                "HeaderAuthenticator.admin_groups is set but groups_header is not: nobody becomes "
                "admin through a group; set groups_header to the header listing the user's groups."
            )

    def _check_secret(self):
        """Refuse to start without a shared secret unless ``require_shared_secret`` is False
        (ValueError naming the option and the proxy-side line to add), and with one shorter
        than ``MIN_SECRET_LENGTH`` characters (guessable by any local process)."""
        if self.shared_secret:
            if len(self.shared_secret) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"HeaderAuthenticator.shared_secret is {len(self.shared_secret)} characters long: "
                    f"use at least {MIN_SECRET_LENGTH} random characters (openssl rand -hex 32), "
                    f"a short one can be guessed by anything that reaches the hub's ports."
                )
            return
        header = self.shared_secret_header
        if self.require_shared_secret:
            raise ValueError(
                f"HeaderAuthenticator.shared_secret is not set. Without it any process that can "
                f"reach the hub's ports (users' notebook servers on this host included) can log in "
                f"as anyone, admins too. Set ${SECRET_ENV} (or c.HeaderAuthenticator.shared_secret) "
                f"to a random string (openssl rand -hex 32) and make the front proxy send it on "
                f"login requests (/hub/login, /hub/user-data, /hub/set-user-data only, so that "
                f"users' servers never see it): nginx: proxy_set_header {header} \"<secret>\"; "
                f"Apache: RequestHeader set {header} \"<secret>\" "
                f"\"expr=%{{REQUEST_URI}} =~ m#^/hub/(login|user-data|set-user-data)$#\" "
                f"(docs/deploy-behind-proxy.md has complete snippets). Only if nothing but the "
                f"front proxy can reach the hub's ports, set "
                f"c.HeaderAuthenticator.require_shared_secret = False instead."
            )
        self.log.warning(
            "HeaderAuthenticator.require_shared_secret is False and no shared_secret is set: "
            "logins are judged by address alone. Any process that can reach the hub's ports "
            "(its own proxy's too) can log in as anyone, admins included. Keep these ports "
            "firewalled from everything but the front proxy, and run no user code on this host."
        )

    # ---- requests ------------------------------------------------------------------------
    def get_handlers(self, app):
        return [
            (r"/login", HeaderLoginHandler),
            (r"/logout", HeaderLogoutHandler),
            (r"/user-data", UserDataHandler),
            (r"/set-user-data", UserDataHandler),
        ]

    def check_trusted_request(self, handler) -> None:
        """Raise 403 unless ``handler``'s request came from a trusted front proxy (and carries
        the shared secret, if configured). Logs refusals with the peer address."""
        request = handler.request
        direct = request.connection.context.address
        direct_peer = direct[0] if isinstance(direct, tuple) else str(direct)
        peer = resolve_peer(
            direct_peer, request.headers.get_list("X-Forwarded-For"), self._hub_proxies, self._trusted
        )
        if not peer.trusted:
            self.log.warning(
                "Refused header login for %s from %s: %s", request.path, peer.address, peer.reason
            )
            raise web.HTTPError(
                403,
                "This hub accepts logins only through its front proxy; this request did not "
                "come from it.",
            )
        if self.shared_secret:
            sent = request.headers.get(self.shared_secret_header, "")
            if not hmac.compare_digest(sent.encode("utf-8", "replace"), self.shared_secret.encode()):
                self.log.warning(
                    "Refused header login for %s from %s: missing or wrong %s",
                    request.path, peer.address, self.shared_secret_header,
                )
                raise web.HTTPError(403, "The front proxy's credentials were missing or wrong.")
        self.log.debug("Header request from trusted proxy %s (client %s)", peer.address, peer.client or "?")

    def _header(self, headers, name: str) -> str | None:
        """One header's value, or None if absent/empty; 400 if repeated or too large."""
        values = headers.get_list(name)
        if not values:
            return None
        if len(values) > 1:
            raise web.HTTPError(400, f"Header {name} was sent more than once.")
        value = values[0].strip()
        if len(value.encode("utf-8", "replace")) > self.max_header_size:
            raise web.HTTPError(400, f"Header {name} is larger than {self.max_header_size} bytes.")
        return value or None

    def _parse(self, key: str, name: str, raw: str):
        try:
            return self.header_parsers[key].parse(raw)
        except HeaderParseError as e:
            raise web.HTTPError(e.status, f"Header {name}: {e.message}") from None

    def username_from_request(self, handler) -> str:
        """The (un-normalised) username the request's auth header names; 401/403/400 if none."""
        name_header = self.allowed_headers["auth"]
        raw = self._header(handler.request.headers, name_header)
        if raw is None:
            self.log.warning("Header login for %s without %s", handler.request.path, name_header)
            raise web.HTTPError(
                401, f"Expected the header {name_header} from the front proxy, but it was missing."
            )
        name = self._parse("auth", name_header, raw)
        if not isinstance(name, str) or not name.strip():
            raise web.HTTPError(403, f"Header {name_header} does not name a user.")
        return name.strip()

    def redacted(self, headers) -> dict:
        """Headers for a DEBUG log line, with sensitive values replaced by ``<redacted>``."""
        hidden = {h.lower() for h in self.sensitive_headers} | {self.shared_secret_header.lower()}
        return {k: ("<redacted>" if k.lower() in hidden else v) for k, v in headers.get_all()}

    async def authenticate(self, handler, data=None):
        """Build the auth model from the request's headers (``data`` is ignored).

        Raises ``tornado.web.HTTPError`` for untrusted peers (403), a missing username header
        (401), unparseable or oversize headers (400) and usernames the parser rejects (403).
        """
        self.check_trusted_request(handler)
        headers = handler.request.headers
        self.log.debug("Header login request headers: %s", self.redacted(headers))
        name = self.username_from_request(handler)
        auth_state = {}
        for key, header in self.allowed_headers.items():
            if key == "auth":
                continue
            raw = self._header(headers, header)
            if raw is None:
                continue
            value = self._parse(key, header, raw)
            if value is not None:
                auth_state[header] = value
        model = {"name": name, "auth_state": await self._with_user_data(handler, name, auth_state)}
        if self.groups_header:
            raw_groups = self._header(headers, self.groups_header)
            try:
                groups = split_groups(raw_groups) if raw_groups else []
            except HeaderParseError as e:
                raise web.HTTPError(e.status, f"Header {self.groups_header}: {e.message}") from None
            if self.manage_groups:
                model["groups"] = groups
            if self.admin_groups:
                model["admin"] = bool(self.admin_groups.intersection(groups)) or (
                    self.normalize_username(name) in self.admin_users
                )
        return model

    async def _with_user_data(self, handler, name: str, auth_state: dict) -> dict:
        """Carry previously posted user data over into a new login's auth_state."""
        if not self.user_external_allow_attributes or not self.enable_auth_state:
            return auth_state
        user = handler.find_user(self.normalize_username(name))
        previous = (await user.get_auth_state() or {}) if user is not None else {}
        for key in self.user_external_allow_attributes:
            if key in previous and key not in auth_state:
                auth_state[key] = previous[key]
        return auth_state

    async def pre_spawn_start(self, user, spawner):
        """Copy ``spawner_shared_headers`` entries of the user's auth_state into the spawner
        environment (text as is, other values as JSON)."""
        if not self.spawner_shared_headers:
            return
        auth_state = await user.get_auth_state() or {}
        shared = []
        for name in self.spawner_shared_headers:
            if name in auth_state:
                value = auth_state[name]
                spawner.environment[name] = value if isinstance(value, str) else json.dumps(value)
                shared.append(name)
        self.log.debug("Shared auth_state entries %s with %s's spawner environment", shared, user.name)
