"""HeaderAuthenticator behind a real nginx, in front of a real JupyterHub with CHP.

nginx authenticates the person (basic auth stands in for the institution's login) and sets
the identity headers with ``examples/header-nginx/hub-identity.conf`` and the shared secret
(on login requests only) with ``hub-secret-paths.conf``, the snippets the docs show. The hub
trusts only nginx's address and the shared secret.
"""

import json
import re
import secrets
import sys
from pathlib import Path

import requests

from tests.fixtures.net import loopback_host

REPO = Path(__file__).resolve().parents[2]
IDENTITY_SNIPPET = REPO / "examples" / "header-nginx" / "hub-identity.conf"
SECRET_PATHS_SNIPPET = REPO / "examples" / "header-nginx" / "hub-secret-paths.conf"
DATA = {"HOST": "storage.example.org", "PATH": "/data/x"}


def front_proxied_hub(hub_factory, nginx_factory, user: str, password: str, extra_config: str = ""):
    """Start a hub that trusts one nginx, and that nginx; return (hub, nginx, secret)."""
    nginx_host = loopback_host()
    secret = secrets.token_hex(16)
    hub = hub_factory(
        f"""
from headerauthenticator import JSONParser
c.JupyterHub.authenticator_class = "header"
c.HeaderAuthenticator.trusted_proxy_ips = [{nginx_host!r}]
c.HeaderAuthenticator.allowed_headers = {{"auth": "Remote-User", "data": "X-User-Data"}}
c.HeaderAuthenticator.header_parser_classes = {{"data": JSONParser}}
c.HeaderAuthenticator.enable_auth_state = True
c.HeaderAuthenticator.spawner_shared_headers = ["X-User-Data"]
c.HeaderAuthenticator.groups_header = "X-User-Groups"
c.HeaderAuthenticator.manage_groups = True
c.HeaderAuthenticator.user_external_allow_attributes = ["data"]
c.HeaderAuthenticator.max_header_size = 2048
c.Authenticator.blocked_users = {{"mallory"}}
c.Spawner.cmd = [{sys.executable!r}, "-m", "jupyterhub.tests.mocksu"]
{extra_config}
""",
        env={"JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32), "JUPYTERHUB_HEADER_AUTH_SECRET": secret},
    )
    data = json.dumps(DATA).replace("'", "")
    nginx = nginx_factory(
        hub.url,
        host=nginx_host,
        basic_auth={user: password, "mallory": password},
        http_directives=f"""
map $remote_user $hub_user_data {{ default ""; {user} '{data}'; }}
map $remote_user $hub_user_groups {{ default ""; {user} "staff,physics"; }}
{SECRET_PATHS_SNIPPET.read_text()}
""",
        server_directives=f'set $hub_proxy_secret "{secret}";',
        location_directives=IDENTITY_SNIPPET.read_text(),
    )
    return hub, nginx, secret


def environ_of(pid: int) -> dict:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def test_login_through_nginx_auth_state_groups_and_spawner_env(hub_factory, nginx_factory, unix_user):
    name, password = unix_user(), secrets.token_urlsafe(8)
    hub, nginx, _ = front_proxied_hub(hub_factory, nginx_factory, name, password)

    s = requests.Session()
    s.auth = (name, password)
    r = s.get(f"{nginx.url}/hub/home", timeout=30)
    assert r.status_code == 200, r.text[-2000:]
    assert r.url.startswith(nginx.url) and "/hub/home" in r.url
    assert name in r.text

    # auth_state holds the parsed JSON header; groups came from the groups header
    model = hub.api("GET", f"/users/{name}").json()
    assert model["auth_state"] == {"X-User-Data": DATA}
    assert sorted(model["groups"]) == ["physics", "staff"]

    # the front proxy delivers more data; it lands in (persisted, encrypted) auth_state, through
    # /hub/user-data or the published name /hub/set-user-data
    r = s.post(f"{nginx.url}/hub/user-data", json={"data": {"quota": "5G"}}, timeout=30)
    assert r.status_code == 200, r.text
    assert hub.api("GET", f"/users/{name}").json()["auth_state"]["data"] == {"quota": "5G"}
    r = s.post(f"{nginx.url}/hub/set-user-data", json={"data": {"quota": "10G"}}, timeout=30)
    assert r.status_code == 200 and r.json() == {"user": name, "stored": ["data"]}, r.text
    assert hub.api("GET", f"/users/{name}").json()["auth_state"]["data"] == {"quota": "10G"}
    # a body over max_user_data_size (default 65536 bytes) is refused and changes nothing
    big = s.post(f"{nginx.url}/hub/set-user-data", data=json.dumps({"data": "x" * 70_000}),
                 headers={"Content-Type": "application/json"}, timeout=30)
    assert big.status_code == 413 and "larger than 65536 bytes" in big.text
    assert hub.api("GET", f"/users/{name}").json()["auth_state"]["data"] == {"quota": "10G"}
    bad = s.post(f"{nginx.url}/hub/user-data", json={"nope": 1}, timeout=30)
    assert bad.status_code == 400 and "nope" in bad.text
    form = s.post(f"{nginx.url}/hub/user-data", data="{}", headers={"Content-Type": "text/plain"}, timeout=30)
    assert form.status_code == 415

    # a new login keeps the posted data and refreshes the header data (next=/hub/home: a
    # login without next sends a user with no running server to /hub/spawn, which starts one)
    assert s.get(f"{nginx.url}/hub/login", params={"next": "/hub/home"}, timeout=30).status_code == 200
    assert hub.api("GET", f"/users/{name}").json()["auth_state"] == {"X-User-Data": DATA, "data": {"quota": "10G"}}

    # the spawner's process receives the shared header as an environment variable
    hub.spawn(name)
    pid = hub.api("GET", f"/users/{name}").json()["servers"][""]["state"]["pid"]
    env = environ_of(pid)
    assert json.loads(env["X-User-Data"]) == DATA
    assert "data" not in env  # only spawner_shared_headers are shared

    assert "storage.example.org" not in above_debug(hub.log_text()), "header value logged above DEBUG"


def above_debug(log: str) -> str:
    """The hub log without its DEBUG records (a record's continuation lines go with it)."""
    kept, level = [], ""
    for line in log.splitlines():
        match = re.match(r"\[([DIWEC]) \d{4}-", line)
        if match:
            level = match.group(1)
        if level != "D":
            kept.append(line)
    return "\n".join(kept)


def test_blocked_user_through_nginx_is_403(hub_factory, nginx_factory, unix_user):
    name, password = unix_user(), secrets.token_urlsafe(8)
    hub, nginx, _ = front_proxied_hub(hub_factory, nginx_factory, name, password)
    r = requests.get(f"{nginx.url}/hub/login", auth=("mallory", password), timeout=30)
    assert r.status_code == 403 and "does not allow your account" in r.text
    assert requests.get(f"{nginx.url}/hub/login", timeout=30).status_code == 401  # nginx's own login


def test_forged_headers_bypassing_nginx_are_refused(hub_factory, nginx_factory, unix_user):
    name, password = unix_user(), secrets.token_urlsafe(8)
    hub, nginx, secret = front_proxied_hub(hub_factory, nginx_factory, name, password)
    forged = {"Remote-User": name, "X-User-Data": json.dumps(DATA)}

    # straight to the hub's public port (CHP), with and without the shared secret
    for extra in ({}, {"X-Hub-Proxy-Secret": secret}):
        r = requests.get(f"{hub.url}/hub/login", headers={**forged, **extra}, allow_redirects=False, timeout=30)
        assert r.status_code == 403, r.text
        assert "only through its front proxy" in r.text

    # a forged X-Forwarded-For naming nginx: CHP appends the real peer, which is judged
    r = requests.get(
        f"{hub.url}/hub/login",
        headers={**forged, "X-Forwarded-For": nginx.host, "X-Real-IP": nginx.host, "X-Hub-Proxy-Secret": secret},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 403

    # straight to the hub's own port with a forged X-Forwarded-For: addresses cannot tell a
    # local process from CHP, the shared secret can
    r = requests.get(
        f"http://127.0.0.1:{hub.hub_port}/hub/login",
        headers={**forged, "X-Forwarded-For": nginx.host},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 403

    refusals = [line for line in hub.log_text().splitlines() if "Refused header login" in line]
    assert any("from 127.0.0.1: not a trusted proxy" in line for line in refusals), refusals
    assert any("X-Hub-Proxy-Secret" in line for line in refusals), refusals
    assert not any(secret in line for line in hub.log_text().splitlines())
    assert hub.api("GET", f"/users/{name}").status_code == 404  # nobody was logged in


def test_bad_input_from_the_trusted_proxy_gets_clear_4xx(hub_factory, nginx_factory, unix_user):
    """The test plays the trusted proxy (the hub's own port, nginx's address in
    X-Forwarded-For, the secret) to send headers nginx would never send."""
    name, password = unix_user(), secrets.token_urlsafe(8)
    hub, nginx, secret = front_proxied_hub(hub_factory, nginx_factory, name, password)
    as_proxy = {"X-Forwarded-For": nginx.host, "X-Hub-Proxy-Secret": secret}
    url = f"http://127.0.0.1:{hub.hub_port}/hub/login"
    cases = [
        ({}, 401, "Remote-User"),
        ({"Remote-User": name, "X-User-Data": "{not json"}, 400, "X-User-Data"),
        ({"Remote-User": name, "X-User-Data": "x" * 3000}, 400, "larger than 2048"),
        ({"Remote-User": name, "X-User-Groups": "[1, 2]"}, 400, "X-User-Groups"),
    ]
    for headers, status, text in cases:
        r = requests.get(url, headers={**as_proxy, **headers}, allow_redirects=False, timeout=30)
        assert r.status_code == status, (headers.keys(), r.status_code)
        assert text in r.text
    ok = requests.get(url, headers={**as_proxy, "Remote-User": name}, allow_redirects=False, timeout=30)
    assert ok.status_code == 302
    # next is validated by JupyterHub: no open redirect
    r = requests.get(
        url, params={"next": "https://evil.example/x"}, headers={**as_proxy, "Remote-User": name},
        allow_redirects=False, timeout=30,
    )
    assert r.status_code == 302 and "evil.example" not in r.headers["Location"]
    r = requests.get(
        url, params={"next": "/hub/token"}, headers={**as_proxy, "Remote-User": name},
        allow_redirects=False, timeout=30,
    )
    assert r.headers["Location"] == "/hub/token"
    assert " 500 " not in hub.log_text() and "Traceback" not in hub.log_text()


def test_logout_redirects_to_front_proxy_logout(hub_factory, nginx_factory, unix_user):
    name, password = unix_user(), secrets.token_urlsafe(8)
    hub, nginx, _ = front_proxied_hub(
        hub_factory, nginx_factory, name, password,
        extra_config='c.HeaderAuthenticator.logout_redirect_url = "/sso/logout"',
    )
    s = requests.Session()
    s.auth = (name, password)
    assert s.get(f"{nginx.url}/hub/home", timeout=30).status_code == 200
    r = s.get(f"{nginx.url}/hub/logout", allow_redirects=False, timeout=30)
    assert r.status_code == 302 and r.headers["Location"] == "/sso/logout"
    assert re.search(r"jupyterhub-hub-login=;|jupyterhub-hub-login=\"\"", r.headers.get("Set-Cookie", ""))
