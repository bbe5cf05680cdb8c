"""Forged identity headers from the hub's own host, against a real hub with CHP and a real nginx.

The hub trusts a front proxy on another host (10.9.9.9, as in the docs' example). A local
process (a user's notebook server, say) connects to the hub's own port, or to CHP, with
``Remote-User: boss`` and ``X-Forwarded-For: 10.9.9.9``: to the hub that looks exactly like
CHP forwarding a request from the front proxy. Only the shared secret tells them apart, so the
hub does not start without one, and the front proxy sends it on login requests only (users'
servers receive every other request's headers).
"""

import http.client
import http.server
import secrets
import threading

import pytest
import requests

from tests.fixtures.hub import HubError
from tests.integration.test_header_nginx import IDENTITY_SNIPPET, SECRET_PATHS_SNIPPET

FRONT_PROXY = "10.9.9.9"
SECRET_HEADER = "X-Hub-Proxy-Secret"
LOGIN_COOKIE = "jupyterhub-hub-login"

REMOTE_PROXY_CONFIG = f"""
c.JupyterHub.authenticator_class = "header"
c.HeaderAuthenticator.trusted_proxy_ips = [{FRONT_PROXY!r}]
c.HeaderAuthenticator.groups_header = "X-User-Groups"
c.HeaderAuthenticator.manage_groups = True
c.Authenticator.admin_users = {{"boss"}}
"""


def hub_behind_remote_proxy(hub_factory, extra_config: str = "", env: dict | None = None):
    """A hub trusting the front proxy at 10.9.9.9 with a fresh shared secret; (hub, secret)."""
    secret = secrets.token_hex(32)
    hub = hub_factory(REMOTE_PROXY_CONFIG + extra_config,
                      env={"JUPYTERHUB_HEADER_AUTH_SECRET": secret, **(env or {})})
    return hub, secret


def as_front_proxy(secret: str, **headers) -> dict:
    """Headers of a request that CHP forwards from the front proxy, with ``secret``."""
    return {"X-Forwarded-For": FRONT_PROXY, SECRET_HEADER: secret, **headers}


def test_hub_refuses_to_start_without_the_shared_secret(hub_factory):
    hub = hub_factory(REMOTE_PROXY_CONFIG, env={"JUPYTERHUB_HEADER_AUTH_SECRET": ""}, start=False)
    with pytest.raises(HubError, match="exited at start-up"):
        hub.start()
    log = hub.log_text()
    assert "HeaderAuthenticator.shared_secret is not set" in log
    assert f'proxy_set_header {SECRET_HEADER} "<secret>";' in log
    assert f'RequestHeader set {SECRET_HEADER} "<secret>"' in log
    assert "require_shared_secret = False" in log


def test_opting_out_starts_with_a_warning(hub_factory):
    hub = hub_factory(REMOTE_PROXY_CONFIG + "c.HeaderAuthenticator.require_shared_secret = False\n",
                      env={"JUPYTERHUB_HEADER_AUTH_SECRET": ""})
    assert "require_shared_secret is False and no shared_secret is set" in hub.log_text()


def test_local_forgery_to_the_hub_port_and_chp_is_refused(hub_factory):
    hub, secret = hub_behind_remote_proxy(hub_factory)
    users_before = hub.api("GET", "/users").json()  # boss exists already: admin_users are made at start
    forged = {"Remote-User": "boss", "X-Forwarded-For": FRONT_PROXY, "X-User-Groups": "admins"}
    hub_port = f"http://127.0.0.1:{hub.hub_port}"
    for base in (hub_port, hub.url):  # the hub's own port, and through CHP
        for secret_sent in ({}, {SECRET_HEADER: ""}, {SECRET_HEADER: secret[:-1]}, {SECRET_HEADER: "x" * 64}):
            s = requests.Session()
            r = s.get(f"{base}/hub/login", headers={**forged, **secret_sent}, allow_redirects=False, timeout=30)
            assert r.status_code == 403, (base, secret_sent, r.status_code)
            assert LOGIN_COOKIE not in r.headers.get("Set-Cookie", "")
            assert LOGIN_COOKIE not in s.cookies
            # no session: the admin page sends the browser to log in
            r = s.get(f"{hub.url}/hub/admin", allow_redirects=False, timeout=30)
            assert r.status_code == 302 and "/hub/login" in r.headers["Location"]
    assert hub.api("GET", "/users").json() == users_before  # no user made, no activity recorded
    assert hub.api("GET", "/groups").json() == []
    log = hub.log_text()
    assert f"from {FRONT_PROXY}: missing or wrong {SECRET_HEADER}" in log  # the hub-port forgery
    assert "from 127.0.0.1: not a trusted proxy" in log  # through CHP, which appends the real peer
    assert secret not in log

    # the same request carrying the secret is exactly what CHP forwards from the front proxy
    s = requests.Session()
    r = s.get(f"{hub_port}/hub/login", headers=as_front_proxy(secret, **{"Remote-User": "boss"}),
              params={"next": "/hub/admin"}, allow_redirects=False, timeout=30)
    assert r.status_code == 302 and LOGIN_COOKIE in s.cookies
    assert s.get(f"{hub.url}/hub/admin", allow_redirects=False, timeout=30).status_code == 200


def test_deep_groups_header_is_400(hub_factory):
    """4000 ``[`` used to reach the JSON decoder and come back as a RecursionError (500)."""
    hub, secret = hub_behind_remote_proxy(hub_factory)
    url = f"http://127.0.0.1:{hub.hub_port}/hub/login"
    for groups in ("[" * 4000, "[" * 4000 + "]" * 4000, '[["nested"]]'):
        headers = as_front_proxy(secret, **{"Remote-User": "alice", "X-User-Groups": groups})
        r = requests.get(url, headers=headers, allow_redirects=False, timeout=30)
        assert r.status_code == 400, r.status_code
        assert "X-User-Groups" in r.text and "nested more than 1 levels deep" in r.text
    assert hub.api("GET", "/users/alice").status_code == 404
    assert "Traceback" not in hub.log_text() and " 500 " not in hub.log_text()


def test_oversize_user_data_body_is_413(hub_factory):
    """A body of megabytes straight to the hub's port: refused with a message, not kept."""
    hub, secret = hub_behind_remote_proxy(
        hub_factory,
        "c.HeaderAuthenticator.enable_auth_state = True\n"
        "c.HeaderAuthenticator.user_external_allow_attributes = ['data']\n",
        env={"JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32)},
    )
    headers = as_front_proxy(secret, **{"Remote-User": "alice", "Content-Type": "application/json"})
    body = b'{"data": "' + b"z" * 5_000_000 + b'"}'
    r = requests.post(f"http://127.0.0.1:{hub.hub_port}/hub/set-user-data", data=body, headers=headers, timeout=60)
    assert r.status_code == 413
    assert r.json() == {"status": 413, "message": "User data is larger than 65536 bytes."}
    assert "Traceback" not in hub.log_text()


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Upstream that records each request's path and shared-secret headers, answers 200."""

    def do_GET(self):
        self.server.seen[self.path] = self.headers.get_all(SECRET_HEADER) or []
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def recording_upstream():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen = {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_nginx_sends_the_secret_on_login_paths_only(nginx_factory, recording_upstream):
    """Everything under /user/ reaches a user's server with all its headers: the example's
    nginx snippets must send the secret only where CHP routes to the hub's login endpoints, as
    the client wrote the path (nginx forwards it unnormalised)."""
    secret = secrets.token_hex(32)
    host, port = recording_upstream.server_address
    nginx = nginx_factory(
        f"http://{host}:{port}",
        http_directives='map $remote_user $hub_user_data { default ""; }\n'
                        'map $remote_user $hub_user_groups { default ""; }\n' + SECRET_PATHS_SNIPPET.read_text(),
        server_directives=f'set $hub_proxy_secret "{secret}";',
        location_directives=IDENTITY_SNIPPET.read_text(),
    )
    with_secret = ["/hub/login", "/hub/login?next=%2Fhub%2Fhome", "/hub/user-data", "/hub/set-user-data"]
    without = ["/user/alice/api/contents", "/user/alice/../../hub/login", "/user/alice/%2e%2e/%2e%2e/hub/login",
               "/hub%2Flogin", "/hub/loginx", "/hub/login/x", "/hub/api/users", "/hub/home", "/"]
    for path in with_secret + without:
        conn = http.client.HTTPConnection(nginx.host, nginx.port, timeout=30)
        conn.request("GET", path, headers={SECRET_HEADER: "sent-by-the-client"})
        assert conn.getresponse().status == 200, path
        conn.close()
    seen = recording_upstream.seen
    assert {path: seen[path] for path in with_secret} == {path: [secret] for path in with_secret}
    assert {path: seen[path] for path in without} == {path: [] for path in without}
