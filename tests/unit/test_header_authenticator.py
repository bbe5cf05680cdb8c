"""HeaderAuthenticator's login logic on real tornado requests, through JupyterHub's own
``get_authenticated_user`` (allowed/blocked/admin/normalisation/post_auth_hook), without a hub."""

import json
import logging
from types import SimpleNamespace

import pytest
from tornado import web
from traitlets.config import Config
from tornado.httputil import HTTPHeaders, HTTPServerRequest

from headerauthenticator import HeaderAuthenticator, JSONParser, RegexUsernameParser

NGINX = "127.0.0.20"
THROUGH_NGINX = ("127.0.0.1", f"10.9.9.9, {NGINX}")  # (hub's TCP peer = CHP, X-Forwarded-For)
SECRET = "front-proxy-secret-0123456789"


class User:
    """The part of jupyterhub.user.User the authenticator touches."""

    def __init__(self, name, auth_state=None):
        self.name = name
        self.auth_state = auth_state

    async def get_auth_state(self):
        return self.auth_state


def handler(headers=(), peer=THROUGH_NGINX, users=None, secret=SECRET):
    """A handler-like object around a real tornado request arriving from ``peer``, carrying
    ``secret`` in X-Hub-Proxy-Secret (none if None)."""
    direct, xff = peer
    h = HTTPHeaders()
    if xff is not None:
        h.add("X-Forwarded-For", xff)
    if secret is not None:
        h.add("X-Hub-Proxy-Secret", secret)
    for name, value in headers if isinstance(headers, (list, tuple)) else headers.items():
        h.add(name, value)
    context = SimpleNamespace(address=(direct, 40000), remote_ip=direct, protocol="http", trusted_downstream=set())
    request = HTTPServerRequest(method="GET", uri="/hub/login", headers=h, connection=SimpleNamespace(context=context))
    users = users or {}
    return SimpleNamespace(request=request, find_user=users.get)


def make(**config):
    config.setdefault("trusted_proxy_ips", [NGINX])
    config.setdefault("shared_secret", SECRET)
    if "allowed_users" not in config:
        config.setdefault("allow_all", True)
    return HeaderAuthenticator(**config)


async def login(auth, h):
    return await auth.get_authenticated_user(h, None)


def status_of(excinfo) -> tuple[int, str]:
    return excinfo.value.status_code, excinfo.value.log_message


# ---- happy path -----------------------------------------------------------------------
async def test_login_through_trusted_proxy_with_extra_headers():
    auth = make(
        allowed_headers={"auth": "Remote-User", "data": "X-User-Data", "dn": "X-User-DN"},
        header_parser_classes={"data": JSONParser},
        enable_auth_state=True,
    )
    model = await login(
        auth,
        handler({"Remote-User": "Alice", "X-User-Data": '{"HOST": "h1", "N": 2}', "X-User-DN": "cn=alice"}),
    )
    assert model["name"] == "alice"  # JupyterHub's normalisation applied
    assert model["auth_state"] == {"X-User-Data": {"HOST": "h1", "N": 2}, "X-User-DN": "cn=alice"}


async def test_optional_headers_may_be_missing():
    auth = make(allowed_headers={"auth": "Remote-User", "data": "X-User-Data"})
    model = await login(auth, handler({"Remote-User": "bob"}))
    assert model["name"] == "bob" and model["auth_state"] == {}


async def test_regex_username_parser_config():
    config = Config()
    config.RegexUsernameParser.username_extract_regex = r"([a-z0-9_.+-]+@[a-z0-9-]+\.[a-z0-9-.]+)"
    config.RegexUsernameParser.replace_extract_chars = {"@": "_", ".": "_"}
    auth = make(header_parser_classes={"auth": RegexUsernameParser}, config=config)
    model = await login(auth, handler({"Remote-User": "https://idp.example/id/jane@nbi.dk"}))
    assert model["name"] == "jane_nbi_dk"


# ---- JupyterHub's own checks apply ----------------------------------------------------
async def test_allowed_users():
    auth = make(allowed_users={"alice"})
    assert (await login(auth, handler({"Remote-User": "alice"})))["name"] == "alice"
    assert await login(auth, handler({"Remote-User": "mallory"})) is None


async def test_blocked_users_beat_allow_all():
    auth = make(allow_all=True, blocked_users={"mallory"})
    assert await login(auth, handler({"Remote-User": "mallory"})) is None
    assert (await login(auth, handler({"Remote-User": "carol"})))["name"] == "carol"


async def test_admin_users_and_post_auth_hook():
    seen = []

    def hook(authenticator, h, model):
        seen.append(model["name"])
        model["auth_state"]["hooked"] = True
        return model

    auth = make(allow_all=True, admin_users={"root1"}, post_auth_hook=hook)
    model = await login(auth, handler({"Remote-User": "root1"}))
    assert model["admin"] is True and model["auth_state"]["hooked"] and seen == ["root1"]


async def test_invalid_username_refused_by_jupyterhub():
    auth = make(allow_all=True, username_pattern=r"^[a-z]+$")
    assert await login(auth, handler({"Remote-User": "bad name!"})) is None


async def test_groups_header_with_manage_groups_and_admin_groups():
    auth = make(allow_all=True, groups_header="X-Groups", manage_groups=True, admin_groups={"hubadmins"})
    model = await login(auth, handler({"Remote-User": "dana", "X-Groups": "staff, hubadmins"}))
    assert model["groups"] == ["staff", "hubadmins"] and model["admin"] is True
    model = await login(auth, handler({"Remote-User": "erin", "X-Groups": '["staff"]'}))
    assert model["groups"] == ["staff"] and model["admin"] is False
    model = await login(auth, handler({"Remote-User": "fred"}))
    assert model["groups"] == [] and model["admin"] is False


# ---- refusals ---------------------------------------------------------------------------
async def test_untrusted_direct_peer_is_403_and_logged(caplog):
    auth = make(allow_all=True)
    with caplog.at_level(logging.WARNING), pytest.raises(web.HTTPError) as e:
        await login(auth, handler({"Remote-User": "alice"}, peer=("10.6.6.6", None)))
    assert e.value.status_code == 403
    assert "10.6.6.6" in caplog.text and "alice" not in caplog.text


async def test_direct_to_proxy_is_403():
    auth = make(allow_all=True)
    with pytest.raises(web.HTTPError) as e:
        await login(auth, handler({"Remote-User": "alice"}, peer=("127.0.0.1", "127.0.0.1")))
    assert e.value.status_code == 403


async def test_forged_forwarded_for_is_403():
    auth = make(allow_all=True)
    with pytest.raises(web.HTTPError) as e:
        await login(auth, handler({"Remote-User": "alice"}, peer=("127.0.0.1", f"{NGINX},127.0.0.1")))
    assert e.value.status_code == 403


async def test_x_real_ip_is_not_believed():
    auth = make(allow_all=True)
    with pytest.raises(web.HTTPError) as e:
        await login(auth, handler({"Remote-User": "alice", "X-Real-Ip": NGINX}, peer=("127.0.0.1", "127.0.0.1")))
    assert e.value.status_code == 403


async def test_shared_secret(caplog):
    auth = make(allow_all=True)
    for sent in (None, "", "wrong", SECRET[:-1], SECRET + "x", SECRET.upper(), "é" + SECRET):
        with caplog.at_level(logging.DEBUG), pytest.raises(web.HTTPError) as e:
            await login(auth, handler({"Remote-User": "alice"}, secret=sent))
        assert status_of(e) == (403, "The front proxy's credentials were missing or wrong.")
    model = await login(auth, handler({"Remote-User": "alice"}))
    assert model["name"] == "alice"
    assert SECRET not in caplog.text


async def test_shared_secret_from_environment(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_HEADER_AUTH_SECRET", "from-env-0123456789")
    auth = HeaderAuthenticator(trusted_proxy_ips=[NGINX])
    assert auth.shared_secret == "from-env-0123456789"


async def test_missing_username_header_is_401_naming_it():
    auth = make(allow_all=True, allowed_headers={"auth": "X-Remote-User"})
    for headers in ({}, {"X-Remote-User": ""}):
        with pytest.raises(web.HTTPError) as e:
            await login(auth, handler(headers))
        status, message = status_of(e)
        assert status == 401 and "X-Remote-User" in message


async def test_bad_json_is_400():
    auth = make(allow_all=True, allowed_headers={"auth": "Remote-User", "d": "X-Data"}, header_parser_classes={"d": JSONParser})
    with pytest.raises(web.HTTPError) as e:
        await login(auth, handler({"Remote-User": "a", "X-Data": "{oops"}))
    status, message = status_of(e)
    assert status == 400 and "X-Data" in message and "oops" not in message


@pytest.mark.parametrize("header", ["Remote-User", "X-Data", "X-Groups"])
async def test_oversize_header_is_400(header):
    auth = make(allow_all=True, allowed_headers={"auth": "Remote-User", "d": "X-Data"}, groups_header="X-Groups", manage_groups=True, max_header_size=100)
    headers = {"Remote-User": "a", "X-Data": "x", "X-Groups": "g", header: "y" * 101}
    with pytest.raises(web.HTTPError) as e:
        await login(auth, handler(headers))
    status, message = status_of(e)
    assert status == 400 and header in message


async def test_repeated_username_header_is_400():
    auth = make(allow_all=True)
    with pytest.raises(web.HTTPError) as e:
        await login(auth, handler([("Remote-User", "alice"), ("Remote-User", "bob")]))
    assert e.value.status_code == 400


async def test_regex_without_match_is_403():
    config = Config()
    config.RegexUsernameParser.username_extract_regex = r"uid=(\w+)"
    auth = make(allow_all=True, header_parser_classes={"auth": RegexUsernameParser}, config=config)
    with pytest.raises(web.HTTPError) as e:
        await login(auth, handler({"Remote-User": "cn=nobody"}))
    assert e.value.status_code == 403


async def test_bad_groups_header_is_400():
    auth = make(allow_all=True, groups_header="X-Groups", manage_groups=True)
    with pytest.raises(web.HTTPError) as e:
        await login(auth, handler({"Remote-User": "a", "X-Groups": "[1, 2]"}))
    assert e.value.status_code == 400


# ---- logging ----------------------------------------------------------------------------
async def test_values_never_logged_above_debug_and_debug_redacts(caplog):
    auth = make(allow_all=True, allowed_headers={"auth": "Remote-User", "d": "X-Data"})
    h = handler({"Remote-User": "alice", "X-Data": "private-data", "Cookie": "jupyterhub-session=cookieval"})
    with caplog.at_level(logging.DEBUG):
        await login(auth, h)
    above_debug = "\n".join(r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG)
    debug = "\n".join(r.getMessage() for r in caplog.records)
    assert "private-data" not in above_debug and "cookieval" not in above_debug
    assert "private-data" in debug  # DEBUG may show ordinary header values ...
    assert SECRET not in debug and "cookieval" not in debug  # ... but not secrets


# ---- start-up checks --------------------------------------------------------------------
@pytest.mark.parametrize("ips", [[], ["0.0.0.0/0"], ["10.0.0.1", "::/0"]])
def test_refuses_to_trust_everyone(ips):
    with pytest.raises(ValueError, match="allow_any_proxy"):
        HeaderAuthenticator(trusted_proxy_ips=ips)


async def test_allow_any_proxy_warns_and_trusts_all(caplog):
    with caplog.at_level(logging.WARNING):
        auth = HeaderAuthenticator(allow_any_proxy=True, allow_all=True, shared_secret=SECRET)
    assert "ANY address" in caplog.text
    model = await login(auth, handler({"Remote-User": "z"}, peer=("10.6.6.6", None)))
    assert model["name"] == "z"


@pytest.mark.parametrize(
    "config, message",
    [
        ({"allowed_headers": {"user": "Remote-User"}}, "'auth' key"),
        ({"header_parser_classes": {"nope": JSONParser}}, "not in allowed_headers"),
        ({"trusted_proxy_ips": ["proxy.example"]}, "not an IP address"),
        ({"user_external_allow_attributes": ["data"]}, "enable_auth_state"),
        ({"header_parser_classes": {"auth": RegexUsernameParser}}, "username_extract_regex"),
    ],
)
def test_refuses_broken_config(config, message):
    config.setdefault("trusted_proxy_ips", [NGINX])
    with pytest.raises(ValueError, match=message):
        HeaderAuthenticator(**config)


def test_parser_classes_accept_import_strings():
    auth = make(allowed_headers={"auth": "Remote-User", "d": "X-D"}, header_parser_classes={"d": "headerauthenticator.JSONParser"})
    assert isinstance(auth.header_parsers["d"], JSONParser)


# ---- user data carried across logins and shared with the spawner ------------------------
async def test_posted_user_data_survives_relogin():
    auth = make(allow_all=True, enable_auth_state=True, user_external_allow_attributes=["data"])
    users = {"alice": User("alice", {"data": {"mount": "x"}, "Old-Header": "gone"})}
    model = await login(auth, handler({"Remote-User": "alice"}, users=users))
    assert model["auth_state"] == {"data": {"mount": "x"}}


async def test_pre_spawn_start_shares_chosen_entries():
    auth = make(spawner_shared_headers=["X-Mount", "data", "Absent"])
    user = User("alice", {"X-Mount": {"HOST": "h"}, "data": "plain", "X-Private": "no"})
    spawner = SimpleNamespace(environment={})
    await auth.pre_spawn_start(user, spawner)
    assert spawner.environment == {"X-Mount": json.dumps({"HOST": "h"}), "data": "plain"}


# ---- the shared secret is required ------------------------------------------------------
@pytest.mark.parametrize(
    "config",
    [
        {"trusted_proxy_ips": ["10.9.9.9"]},  # a remote proxy: CHP's hop looks like a forgery
        {"trusted_proxy_ips": ["127.0.0.2"]},
        {"allow_any_proxy": True},
        {"trusted_proxy_ips": ["10.9.9.9"], "shared_secret_header": "X-Front-Key"},
    ],
)
def test_refuses_to_start_without_the_shared_secret(monkeypatch, config):
    monkeypatch.delenv("JUPYTERHUB_HEADER_AUTH_SECRET", raising=False)
    with pytest.raises(ValueError) as e:
        HeaderAuthenticator(**config)
    message = str(e.value)
    header = config.get("shared_secret_header", "X-Hub-Proxy-Secret")
    for text in ("shared_secret is not set", "JUPYTERHUB_HEADER_AUTH_SECRET", f"proxy_set_header {header} ",
                 f"RequestHeader set {header} ", "require_shared_secret = False"):
        assert text in message


@pytest.mark.parametrize("secret", ["x", "s3cr3t", "0123456789abcde"])
def test_refuses_a_short_secret(secret):
    with pytest.raises(ValueError, match=f"shared_secret is {len(secret)} characters long: use at least 16"):
        HeaderAuthenticator(trusted_proxy_ips=[NGINX], shared_secret=secret)


async def test_opting_out_of_the_secret_is_loud_and_judges_addresses_only(monkeypatch, caplog):
    monkeypatch.delenv("JUPYTERHUB_HEADER_AUTH_SECRET", raising=False)
    with caplog.at_level(logging.WARNING):
        auth = HeaderAuthenticator(trusted_proxy_ips=[NGINX], require_shared_secret=False, allow_all=True)
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "require_shared_secret is False" in warning.getMessage()
    assert "can log in as anyone" in warning.getMessage()
    assert (await login(auth, handler({"Remote-User": "alice"}, secret=None)))["name"] == "alice"
    with pytest.raises(web.HTTPError) as e:
        await login(auth, handler({"Remote-User": "alice"}, peer=("10.6.6.6", None), secret=None))
    assert e.value.status_code == 403


async def test_a_set_secret_is_checked_even_when_not_required():
    auth = make(allow_all=True, require_shared_secret=False)
    with pytest.raises(web.HTTPError) as e:
        await login(auth, handler({"Remote-User": "alice"}, secret=None))
    assert e.value.status_code == 403


def test_secret_from_the_environment_starts_without_warning(caplog, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_HEADER_AUTH_SECRET", "from-env-0123456789")
    with caplog.at_level(logging.WARNING):
        HeaderAuthenticator(trusted_proxy_ips=["127.0.0.2"])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


# ---- start-up warnings ------------------------------------------------------------------
@pytest.mark.parametrize(
    "config, warned",
    [
        ({"admin_groups": {"hubadmins"}}, True),
        ({"admin_groups": {"hubadmins"}, "groups_header": "X-Groups"}, False),
        ({}, False),
    ],
)
def test_warns_when_admin_groups_cannot_be_read(caplog, config, warned):
    with caplog.at_level(logging.WARNING):
        HeaderAuthenticator(trusted_proxy_ips=[NGINX], shared_secret=SECRET, **config)
    assert ("admin_groups is set but groups_header is not" in caplog.text) is warned
