"""ldap_hooks without a server: configuration surface, parsing, escaping, hook chaining."""

import pytest
from traitlets.config import Config

from ldap_hooks import (
    INCREMENT_ATTRIBUTE,
    LDAP,
    LDAP_FIRST_SEARCH_ATTRIBUTE_QUERY,
    LDAP_SEARCH_ATTRIBUTE_QUERY,
    SPAWNER_SUBMIT_DATA,
    SPAWNER_USER_ATTRIBUTE,
    chain_hooks,
    hello_hook,
)
from ldap_hooks.entry import build_dn, dynamic_values, fill, match_filter, parse_submitted
from ldap_hooks.errors import LDAPConfigError, UserDataError
from ldap_hooks.hooks import ldap_options

NAMES = ["C", "ST", "L", "O", "OU", "CN", "emailAddress"]


@pytest.fixture
def clean_class():
    yield
    LDAP._adopt_class_values()
    LDAP._class_values.clear()


def test_published_class_attribute_style(clean_class):
    LDAP.url = "ldap://ldap.example.org"
    LDAP.base_dn = "dc=example,dc=org"
    # the published example builds options from values it set before
    LDAP.search_attribute_queries = [{"search_base": LDAP.base_dn, "search_filter": "(cn=uidNext)"}]
    LDAP.search_result_operations = {
        "uidNumber": {"action": INCREMENT_ATTRIBUTE, "modify_dn": "cn=uidNext," + LDAP.base_dn}
    }
    ldap = LDAP()
    assert ldap.url == "ldap://ldap.example.org"
    assert ldap.search_attribute_queries[0]["search_base"] == "dc=example,dc=org"


def test_traitlets_config_wins_over_class_attributes(clean_class):
    LDAP.url = "ldap://class"
    LDAP.user = "cn=class"
    c = Config()
    c.LDAP.url = "ldap://config"
    ldap = LDAP(config=c)
    assert (ldap.url, ldap.user) == ("ldap://config", "cn=class")


def test_options_are_cached_per_config_and_renewed_after_class_changes(clean_class):
    c = Config()
    c.LDAP.url = "ldap://a"
    assert ldap_options(c) is ldap_options(c)
    first = ldap_options(c)
    LDAP.base_dn = "dc=new"
    assert ldap_options(c) is not first and ldap_options(c).base_dn == "dc=new"


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("dynamic_attributes", {"uid": "9"}, "not one of the methods"),
        ("object_attributes", {"uid)(x": "{uid}"}, "not an LDAP attribute name"),
        ("search_result_operations", {"uidNumber": {"action": "9", "modify_dn": "x"}}, "INCREMENT_ATTRIBUTE"),
        ("search_result_operations", {"uidNumber": {"action": INCREMENT_ATTRIBUTE}}, "modify_dn"),
        ("search_attribute_queries", [{"search_filter": "(x=1)"}], "search_base"),
        ("pool_size", 0, "at least 1"),
    ],
)
def test_bad_options_are_refused(option, value, message):
    c = Config()
    c.LDAP[option] = value
    with pytest.raises(Exception, match=message):
        LDAP(config=c)


def test_parse_x509_subject():
    parsed = parse_submitted(
        "/C=DK/ST=NA/L=NA/O=NBI/OU=NA/CN=Jane Doe/emailAddress=jane@example.org",
        replace={"/": "+"}, strip_chars=["/", "+"], allowed_names=NAMES, max_length=64,
    )
    assert dict(parsed) == {"C": "DK", "ST": "NA", "L": "NA", "O": "NBI", "OU": "NA",
                            "CN": "Jane Doe", "emailAddress": "jane@example.org"}


@pytest.mark.parametrize(
    "subject, message",
    [
        ("/CN=a/uidNumber=0", "uidNumber"),       # smuggled attribute
        ("/CN=a/CN=b", "more than once"),
        ("/CN=a/oops", "name=value"),
        ("/CN=" + "x" * 65, "longer than 64"),
        ("/CN=a\x00b", "control characters"),
        ("/CN=   ", "empty"),
        ("", "did not provide"),
    ],
)
def test_parse_refuses_bad_subjects(subject, message):
    with pytest.raises(UserDataError) as info:
        parse_submitted(subject, replace={"/": "+"}, strip_chars=["/", "+"], allowed_names=NAMES, max_length=64)
    assert message in info.value.shown  # what the user is told


@pytest.mark.parametrize("subject, secret", [("/CN=a/secretName=0", "secretName"), ("/CN=a/secretPart", "secretPart")])
def test_refusals_quote_user_data_only_to_the_user(subject, secret):
    with pytest.raises(UserDataError) as info:
        parse_submitted(subject, replace={"/": "+"}, strip_chars=["/", "+"], allowed_names=NAMES, max_length=64)
    assert secret in info.value.shown
    assert secret not in str(info.value)  # the text that goes to the log


def test_filter_and_dn_values_are_escaped():
    f = match_filter(["posixAccount"], {"uid": "*)(uid=*"})
    assert f == r"(&(objectClass=posixAccount)(uid=\2a\29\28uid=\2a))"
    dn = build_dn([("cn", "a,ou=x+uid=root"), ("uid", "#b ")], "ou=people,dc=example,dc=org")
    assert dn == r"cn=a\,ou\=x\+uid\=root+uid=\#b\ ,ou=people,dc=example,dc=org"


def test_dynamic_values_from_each_source():
    class User:
        name = "alice"

    class Spawner:
        user = User()

    dynamic = {
        "uid": [SPAWNER_USER_ATTRIBUTE, "name"],
        "emailAddress": SPAWNER_SUBMIT_DATA,
        "uidNumber": LDAP_FIRST_SEARCH_ATTRIBUTE_QUERY,
        "memberUid": LDAP_SEARCH_ATTRIBUTE_QUERY,
    }
    sources = {
        SPAWNER_SUBMIT_DATA: {"emailAddress": "a@x.org"},
        SPAWNER_USER_ATTRIBUTE: Spawner.user,
        LDAP_SEARCH_ATTRIBUTE_QUERY: {"uidNumber": ["10000"], "memberUid": ["a", "b"]},
    }
    assert dynamic_values(dynamic, sources, 64) == {
        "uid": "alice", "emailAddress": "a@x.org", "uidNumber": "10000", "memberUid": ["a", "b"],
    }


def test_fill_templates_and_missing_placeholders():
    assert fill({"environment": {"NB_UID": "{uidNumber}"}}, {"uidNumber": "7"}) == {
        "environment": {"NB_UID": "7"}
    }
    # user values are inserted, never interpreted as templates
    assert fill("/home/{uid}", {"uid": "{uidNumber}"}) == "/home/{uidNumber}"
    with pytest.raises(LDAPConfigError, match="placeholder {uid}"):
        fill("/home/{uid}", {})


async def test_chain_hooks_runs_in_order_and_stops_on_error():
    calls = []

    class Log:
        def info(self, *args):
            calls.append("hello")

    class Spawner:
        log = Log()
        user = type("U", (), {"name": "alice"})()

    def sync_hook(spawner):
        calls.append("sync")

    async def failing(spawner):
        calls.append("failing")
        raise RuntimeError("stop")

    await chain_hooks(hello_hook, sync_hook)(Spawner())
    assert calls == ["hello", "sync"]
    with pytest.raises(RuntimeError):
        await chain_hooks(failing, sync_hook)(Spawner())
    assert calls == ["hello", "sync", "failing"]


# ---- where the submitted data comes from (EntrySetup._submitted, no server) -------------------
class FakeUser:
    def __init__(self, name="alice", data=None, auth_state=None):
        self.name = name
        self.data = data
        self._auth_state = auth_state

    async def get_auth_state(self):
        return self._auth_state


def entry_setup(user, environment=None, **options):
    import logging
    from types import SimpleNamespace

    from ldap_hooks.hooks import EntrySetup

    c = Config()
    c.LDAP.replace_object_with = {"/": "+"}
    for name, value in options.items():
        c.LDAP[name] = value
    spawner = SimpleNamespace(user=user, log=logging.getLogger("test"), environment=environment or {})
    return EntrySetup(LDAP(config=c), spawner)


async def test_submitted_data_from_a_dotted_path_and_keys():
    user = FakeUser(data={"User": {"CERT": "/C=DK/CN=Jane Doe", "Other": "/CN=no"}, "CERT": "/CN=top"})
    setup = entry_setup(user, submit_spawner_attribute="user.data", submit_spawner_attribute_keys=("User", "CERT"))
    assert dict(await setup._submitted()) == {"C": "DK", "CN": "Jane Doe"}
    # without the keys the dict itself is the data, whose names are not attributes
    with pytest.raises(UserDataError, match="outside LDAP.submit_attribute_names"):
        await entry_setup(user, submit_spawner_attribute="user.data")._submitted()
    # a key that is not there: no data, a clear refusal
    missing = entry_setup(user, submit_spawner_attribute="user.data", submit_spawner_attribute_keys=("User", "X509"))
    with pytest.raises(UserDataError, match="did not provide"):
        await missing._submitted()


async def test_submitted_data_from_auth_state_with_keys():
    user = FakeUser(auth_state={"cert": {"subject": "/O=NBI/CN=Jane"}})
    setup = entry_setup(user, submit_spawner_attribute="auth_state.cert", submit_spawner_attribute_keys=("subject",))
    assert dict(await setup._submitted()) == {"O": "NBI", "CN": "Jane"}


async def test_name_strip_chars():
    user = FakeUser(data="/CN=Jane/C=DK. ")
    # the published default strips "/", "+", "*", ",", ".", "!" and " " from both ends
    assert dict(await entry_setup(user, submit_spawner_attribute="user.data")._submitted())["C"] == "DK"
    kept = entry_setup(user, submit_spawner_attribute="user.data", name_strip_chars=["/", "+"])
    assert dict(await kept._submitted())["C"] == "DK. "
    # nothing stripped: the leading separator leaves an empty field
    bare = entry_setup(user, submit_spawner_attribute="user.data", name_strip_chars=[])
    with pytest.raises(UserDataError, match="not of the form name=value"):
        await bare._submitted()


def test_spawner_attribute_values():
    from ldap_hooks import SPAWNER_ATTRIBUTE
    from ldap_hooks.entry import initial_sources

    setup = entry_setup(FakeUser(), environment={"LOGIN_SHELL": "/bin/zsh"})
    setup.spawner.notebook_dir = "/work"
    dynamic = {"loginShell": [SPAWNER_ATTRIBUTE, "environment.LOGIN_SHELL"], "notebook_dir": SPAWNER_ATTRIBUTE,
               "absent": [SPAWNER_ATTRIBUTE, "environment.NOPE"]}
    values = dynamic_values(dynamic, initial_sources({}, setup.spawner), 64)
    assert values == {"loginShell": "/bin/zsh", "notebook_dir": "/work"}
    setup.spawner.environment["LOGIN_SHELL"] = "/bin/sh\n"
    with pytest.raises(UserDataError, match="loginShell contains control characters"):
        dynamic_values(dynamic, initial_sources({}, setup.spawner), 64)
