"""Property-based fuzzing of the header login and the user-data endpoint against a real hub.

Random identity, groups, extra-data, shared-secret and X-Forwarded-For headers go to the
hub's own port and through CHP; random bodies go to ``/hub/set-user-data``. Whatever arrives:
no 5xx, no traceback in the hub's log, and a refused request leaves no user, no group and no
auth_state change behind (read back through the hub's REST API). Only a request carrying
the shared secret to the hub's own port with the front proxy's address as the last
X-Forwarded-For entry may log anyone in. The seed is fixed (``derandomize``), so every run
sends the same requests.
"""

import json
import re
import secrets

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_header_forgery import FRONT_PROXY, LOGIN_COOKIE, SECRET_HEADER, hub_behind_remote_proxy

FUZZ_CONFIG = """
from headerauthenticator import JSONParser
c.HeaderAuthenticator.allowed_headers = {"auth": "Remote-User", "data": "X-User-Data", "dn": "X-User-DN"}
c.HeaderAuthenticator.header_parser_classes = {"data": JSONParser}
c.HeaderAuthenticator.enable_auth_state = True
c.HeaderAuthenticator.user_external_allow_attributes = ["data", "quota"]
c.HeaderAuthenticator.admin_groups = {"hubadmins"}
"""

FUZZ_SETTINGS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Header values as an HTTP client can send them: latin-1 without control characters, not
# starting with whitespace.
TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_categories=("Cc",)), max_size=40)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
).map(json.dumps)
# At most 9000 characters a value (max_header_size is 8192 bytes), so that all headers of one
# request stay below tornado's 64 KiB limit, beyond which it drops the connection unanswered.
DEEP = st.one_of(
    st.builds(lambda opener, n: (opener * n)[:9000], st.sampled_from(["[", "{", '{"a":', "[[{}"]), st.integers(1, 4000)),
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
)
HUGE = st.integers(8000, 9000).map(lambda n: "y" * n)
SAMPLES = st.sampled_from(["", "alice", "Boss", "admin", "hubadmins", "staff,hubadmins", '["a", "b"]', '["hubadmins"]',
                           "[", "null", "a;b;;,", "(null)", "a/b", "../x", "%2e", "1e999", "9" * 5000])
VALUE = st.one_of(SAMPLES, TEXT, JSON, DEEP, HUGE).map(str.lstrip)
FORWARDED_FOR = st.one_of(
    st.none(),
    st.just(FRONT_PROXY),
    st.sampled_from(["127.0.0.1", f"{FRONT_PROXY}, {FRONT_PROXY}", f"6.6.6.6, {FRONT_PROXY}", "garbage", "unknown",
                     f"::ffff:{FRONT_PROXY}", f"[{FRONT_PROXY}]", f"{FRONT_PROXY}:80", f"{FRONT_PROXY},", ",,,"]),
    VALUE,
)
SECRET_SENT = st.sampled_from(["right", "absent", "empty", "wrong", "truncated", "longer"])
# Half the requests are what CHP forwards from the front proxy (so the headers reach the
# parsers), half are forged: to the hub's port or CHP, any X-Forwarded-For, any secret.
SENDER = st.one_of(
    st.just(("hub port", FRONT_PROXY, "right")),
    st.tuples(st.sampled_from(["hub port", "chp"]), FORWARDED_FOR, SECRET_SENT),
)


def secret_value(kind: str, secret: str) -> str | None:
    return {"right": secret, "absent": None, "empty": "", "wrong": secrets.token_hex(32),
            "truncated": secret[:-1], "longer": secret + "0"}[kind]


class HubWatch:
    """Reads what a request changed on the hub: users, groups, auth_state, new log lines."""

    def __init__(self, hub):
        self.hub = hub
        self.log_path = hub.dir / f"hub-{hub.starts}.log"
        self.log_seen = 0
        assert "Traceback" not in self.new_log()

    def users(self) -> list:
        r = self.hub.api("GET", "/users", params={"include_stopped_servers": "1"})
        r.raise_for_status()
        return sorted((u["name"], u["admin"], sorted(u["groups"])) for u in r.json())

    def groups(self) -> list:
        r = self.hub.api("GET", "/groups")
        r.raise_for_status()
        return sorted((g["name"], sorted(g["users"])) for g in r.json())

    def auth_state(self, name: str):
        r = self.hub.api("GET", f"/users/{name}")
        r.raise_for_status()
        return r.json()["auth_state"]

    def new_log(self) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(self.log_seen)
            new = log.read()
        self.log_seen += len(new)
        return new.decode(errors="replace")

    def assert_clean_log(self) -> None:
        new = self.new_log()
        assert "Traceback" not in new, new[-3000:]
        assert not re.search(r"\] 5\d\d (GET|POST) ", new), new[-3000:]


def test_fuzzed_login_headers_never_5xx_and_refusals_make_nothing(hub_factory):
    hub, secret = hub_behind_remote_proxy(hub_factory, FUZZ_CONFIG, env={"JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32)})
    watch = HubWatch(hub)
    routes = {"hub port": f"http://127.0.0.1:{hub.hub_port}", "chp": hub.url}
    known = [(watch.users(), watch.groups())]  # users and groups after the last request

    @settings(max_examples=100, **FUZZ_SETTINGS)
    @given(
        sender=SENDER,
        method=st.sampled_from(["GET"] * 7 + ["POST"]),  # a POST without XSRF token is JupyterHub's 403
        user=st.one_of(st.sampled_from(["alice", "Boss", "bob"]), VALUE),
        groups=st.one_of(st.none(), VALUE),
        data=st.one_of(st.none(), JSON, VALUE),
        dn=st.one_of(st.none(), VALUE),
    )
    def login(sender, method, user, groups, data, dn):
        route, forwarded_for, secret_sent = sender
        headers = {"Remote-User": user, "X-User-Groups": groups, "X-User-Data": data, "X-User-DN": dn,
                   "X-Forwarded-For": forwarded_for, SECRET_HEADER: secret_value(secret_sent, secret)}
        headers = {k: v for k, v in headers.items() if v is not None}
        s = requests.Session()
        r = s.request(method, f"{routes[route]}/hub/login", headers=headers, allow_redirects=False, timeout=60)
        assert r.status_code < 500, (r.status_code, r.text[-500:])
        if route == "chp":
            # CHP (node) itself answers 431 to headers over 16 KiB
            assert r.status_code in (403, 431), r.status_code
        elif secret_sent != "right":
            assert r.status_code == 403, r.status_code
        now = (watch.users(), watch.groups())
        if r.status_code == 302:
            assert LOGIN_COOKIE in s.cookies
            known[0] = now
        else:
            assert 400 <= r.status_code < 500 and LOGIN_COOKIE not in s.cookies
            assert r.text.strip() or (route, r.status_code) == ("chp", 431), "a refusal without a message"
            assert now == known[0], "a refused login changed users or groups"
        watch.assert_clean_log()

    login()


def test_fuzzed_user_data_bodies_never_5xx_and_refusals_change_nothing(hub_factory):
    hub, secret = hub_behind_remote_proxy(hub_factory, FUZZ_CONFIG, env={"JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32)})
    url = f"http://127.0.0.1:{hub.hub_port}/hub"
    as_proxy = {"X-Forwarded-For": FRONT_PROXY, SECRET_HEADER: secret}
    r = requests.get(f"{url}/login", headers={**as_proxy, "Remote-User": "dora"}, allow_redirects=False, timeout=60)
    assert r.status_code == 302, r.text
    watch = HubWatch(hub)
    users = watch.users()
    known = [watch.auth_state("dora")]  # dora's auth_state after the last request

    value = JSON.map(json.loads)
    accepted = st.dictionaries(st.sampled_from(["data", "quota"]), value, min_size=1)
    body = st.one_of(accepted.map(lambda d: json.dumps(d).encode()), st.one_of(
        st.dictionaries(st.sampled_from(["data", "quota", "other", ""]), value, max_size=3)
        .map(lambda d: json.dumps(d).encode()),
        value.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=200),
        DEEP.map(lambda t: ('{"data": ' + t).encode()),
        st.integers(65000, 70000).map(lambda n: json.dumps({"data": "z" * n}).encode()),
        st.sampled_from([b'{"data": NaN}', b'{"data": Infinity}', b'{"data": 1e999}', b'{"data": "\xff"}',
                         b'{"data": 1' + b"0" * 5000 + b"}", b'{"quota": "5G", "quota": "6G"}', b"", b"null",
                         b"[]", b"{}"]),
    ))
    # half the posts come from the front proxy for dora, half have anything in these headers
    sender = st.one_of(
        st.just(("dora", "application/json", "right")),
        st.tuples(st.one_of(st.just("dora"), st.none(), VALUE),
                  st.sampled_from(["application/json; charset=utf-8", "text/plain", "APPLICATION/JSON", ""]),
                  st.one_of(st.just("right"), SECRET_SENT)),
    )

    @settings(max_examples=80, **FUZZ_SETTINGS)
    @given(
        path=st.sampled_from(["/set-user-data", "/user-data"]),
        sender=sender,
        body=body,
    )
    def post(path, sender, body):
        user, content_type, secret_sent = sender
        headers = {**as_proxy, "Content-Type": content_type, "Remote-User": user,
                   SECRET_HEADER: secret_value(secret_sent, secret)}
        headers = {k: v for k, v in headers.items() if v is not None}
        r = requests.post(f"{url}{path}", data=body, headers=headers, timeout=60)
        assert r.status_code < 500, (r.status_code, r.text[-500:])
        if secret_sent != "right":
            assert r.status_code == 403
        state = watch.auth_state("dora")
        if r.status_code == 200:
            assert state == {**known[0], **json.loads(body)}
            known[0] = state
        else:
            assert 400 <= r.status_code < 500 and r.json()["message"].strip()
            assert state == known[0], "a refused post changed auth_state"
        assert watch.users() == users
        watch.assert_clean_log()

    post()
