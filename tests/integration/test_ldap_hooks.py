"""ldap_hooks against a real slapd with the MODI example schemas and configuration.

The hook is called with real JupyterHub spawners (LocalProcessSpawner of a hub User in an
in-memory hub database); the directory is a private slapd from the ``slapd`` fixture.
"""

import asyncio
import logging
import time

import pytest
from cryptography.fernet import Fernet

from ldap_hooks import LDAPSpawnError, close_clients, setup_ldap_entry_hook
from tests.fixtures.faults import hung, restart
from tests.fixtures.slapd import example_ldap_config, make_spawner

SUBJECT = "/C=DK/ST=NA/L=NA/O=NBI/OU=NA/CN={cn}/emailAddress={email}"


@pytest.fixture(autouse=True)
def _crypt_key(monkeypatch):
    from jupyterhub.crypto import CryptKeeper

    monkeypatch.setenv("JUPYTERHUB_CRYPT_KEY", Fernet.generate_key().decode())
    CryptKeeper.clear_instance()
    yield
    CryptKeeper.clear_instance()
    close_clients()


async def spawner_for(config, name, cn=None, email=None):
    """A spawner of user ``name`` whose auth_state carries an X.509 subject."""
    spawner = make_spawner(name, config)
    subject = SUBJECT.format(cn=cn or f"User {name}", email=email or f"{name}@example.org")
    await spawner.user.save_auth_state({"X-Certificate-Subject": subject})
    return spawner


def people(slapd):
    return slapd.entries("(objectClass=posixAccount)")


def counter(slapd):
    return slapd.entries("(objectClass=x-nextUserIdentifier)")[0]["uidNumber"]


async def test_first_spawn_creates_entry_and_sets_environment(slapd):
    config = example_ldap_config(slapd)
    spawner = await spawner_for(config, "alice")
    result = await setup_ldap_entry_hook(spawner)

    assert result.created
    assert spawner.environment["NB_USER"] == "alice"
    assert spawner.environment["NB_UID"] == "10000"
    [entry] = people(slapd)
    assert entry["uid"] == ["alice"] and entry["uidNumber"] == 10000
    assert entry["cn"] == ["User alice"] and entry["email"] == ["alice@example.org"]
    # one multi-valued RDN made of the subject's fields (the server orders them its own way)
    rdn, parent = entry["dn"].split(",", 1)
    assert parent == "ou=people,dc=example,dc=org"
    assert sorted(rdn.lower().split("+")) == sorted(
        ["c=dk", "st=na", "l=na", "o=nbi", "ou=na", "cn=user alice", "email=alice@example.org"]
    )
    assert counter(slapd) == 10000
    # the environment reaches the process the spawner would start
    env = spawner.get_env()
    assert env["NB_USER"] == "alice" and env["NB_UID"] == "10000"


async def test_second_spawn_reuses_entry(slapd):
    config = example_ldap_config(slapd)
    await setup_ldap_entry_hook(await spawner_for(config, "bob"))
    again = await spawner_for(config, "bob")
    result = await setup_ldap_entry_hook(again)

    assert not result.created
    assert again.environment["NB_UID"] == "10000"
    assert len(people(slapd)) == 1
    assert counter(slapd) == 10000  # no uid consumed by the second spawn


async def test_concurrent_first_spawns_get_distinct_uids(slapd):
    config = example_ldap_config(slapd)
    spawners = [await spawner_for(config, f"user{i:02d}") for i in range(50)]
    results = await asyncio.gather(
        *(setup_ldap_entry_hook(s) for s in spawners), return_exceptions=True
    )

    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    uids = [int(s.environment["NB_UID"]) for s in spawners]
    assert sorted(uids) == list(range(10000, 10050))
    entries = people(slapd)
    assert len(entries) == 50
    assert sorted(e["uidNumber"] for e in entries) == sorted(uids)
    assert counter(slapd) == 10049


async def test_counter_moved_by_another_writer_is_read_again(slapd, caplog):
    """Another hub (or a tool) moves the counter: the stale delete-old modify is refused by the
    server, the hook reads the counter again and takes the next free uid."""
    caplog.set_level("DEBUG")
    config = example_ldap_config(slapd)
    await setup_ldap_entry_hook(await spawner_for(config, "first"))  # this process now knows 10000
    conn = slapd.connection()
    conn.modify("cn=uidNext,dc=example,dc=org", {"uidNumber": [("MODIFY_REPLACE", ["10500"])]})
    conn.unbind()

    spawner = await spawner_for(config, "second")
    await setup_ldap_entry_hook(spawner)
    assert spawner.environment["NB_UID"] == "10501"
    assert counter(slapd) == 10501
    assert any("moved past 10000" in r.getMessage() for r in caplog.records)


async def test_concurrent_spawns_of_the_same_user_make_one_entry(slapd):
    config = example_ldap_config(slapd)
    spawners = [await spawner_for(config, "carol") for _ in range(8)]
    results = await asyncio.gather(*(setup_ldap_entry_hook(s) for s in spawners))

    assert len(people(slapd)) == 1
    assert {s.environment["NB_UID"] for s in spawners} == {"10000"}
    assert sum(r.created for r in results) == 1


async def test_ldap_stopped_mid_test_fails_spawn_clearly(slapd, caplog):
    config = example_ldap_config(slapd)
    await setup_ldap_entry_hook(await spawner_for(config, "dave"))  # pooled connections exist
    slapd.stop()

    spawner = await spawner_for(config, "erin")
    started = time.monotonic()
    with pytest.raises(LDAPSpawnError) as info:
        await setup_ldap_entry_hook(spawner)
    # refused at once: the closed pooled connections are not waited on, nor is connect_timeout
    assert time.monotonic() - started < 5.0  # connect_timeout's default
    error = info.value
    assert error.status_code == 503
    assert "user directory (LDAP) is not reachable" in error.jupyterhub_message
    assert "NB_UID" not in spawner.environment
    assert any("erin" in r.getMessage() and "DirectoryUnavailable" in r.getMessage()
               for r in caplog.records)

    slapd.start()  # back again: the next spawn works on fresh connections
    await setup_ldap_entry_hook(spawner)
    assert spawner.environment["NB_UID"] == "10001"
    assert {e["uid"][0] for e in people(slapd)} == {"dave", "erin"}


def pooled_client(config):
    """The shared client the hook uses for ``config``."""
    from ldap_hooks.client import Settings, get_client
    from ldap_hooks.hooks import ldap_options

    return get_client(Settings.from_config(ldap_options(config)))


async def spawn_all(config, names):
    """Run the hook for first spawns of ``names`` at once; return their spawners."""
    spawners = [await spawner_for(config, name) for name in names]
    await asyncio.gather(*(setup_ldap_entry_hook(s) for s in spawners))
    return spawners


async def test_directory_restarted_between_spawns_next_spawns_succeed(slapd, caplog):
    """slapd restarts between two spawns: the pooled connections it closed are recognised
    before use and replaced, so no spawn after the restart fails, one at a time or at once."""
    config = example_ldap_config(slapd)
    await spawn_all(config, [f"before{i}" for i in range(4)])
    assert len(pooled_client(config)._idle) >= 2  # several stale connections to trip over

    restart(slapd)
    caplog.clear()
    first = await spawner_for(config, "after0")
    await setup_ldap_entry_hook(first)
    rest = await spawn_all(config, [f"after{i}" for i in range(1, 5)])

    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    uids = [int(s.environment["NB_UID"]) for s in [first, *rest]]
    assert sorted(uids) == list(range(10004, 10009))  # none skipped, none twice
    assert len(people(slapd)) == 9


async def test_connection_lost_under_a_request_is_retried_once_on_a_new_one(slapd, monkeypatch):
    """The directory restarts after the idle check but before the request (a race the check
    cannot close): the request is sent again once, on a new connection, never on another
    pooled one that may be just as dead."""
    from ldap_hooks import client as client_module

    config = example_ldap_config(slapd)
    await spawn_all(config, [f"before{i}" for i in range(4)])
    assert len(pooled_client(config)._idle) >= 2
    monkeypatch.setattr(client_module, "_still_open", lambda conn: True)  # the race, every time

    restart(slapd)
    spawner = await spawner_for(config, "after")
    await setup_ldap_entry_hook(spawner)
    assert spawner.environment["NB_UID"] == "10004"
    assert counter(slapd) == 10004


async def test_hung_directory_fails_the_spawn_in_bounded_time_then_recovers(slapd, caplog):
    """slapd is frozen (accepts connections, never answers): the spawn fails after about one
    operation_timeout naming the directory, no ldap3 call runs on the event loop, nothing is
    written; after SIGCONT the next spawn succeeds without a failed one first."""
    import ldap3

    from tests.fixtures.loop_thread import blocking_calls

    config = example_ldap_config(slapd, operation_timeout=2.0, connect_timeout=2.0)
    await spawn_all(config, ["before0", "before1"])  # pooled connections exist

    spawner = await spawner_for(config, "frozen")
    watched = [(ldap3.Connection, name) for name in ("bind", "search", "modify", "add", "unbind")]
    with hung(slapd), blocking_calls(watched) as blocking:
        started = time.monotonic()
        with pytest.raises(LDAPSpawnError) as info:
            await setup_ldap_entry_hook(spawner)
        waited = time.monotonic() - started
    assert 1.5 < waited < 2 * 2.0 + 2.0 + 3, waited  # one timeout, not retried; bounded
    assert info.value.status_code == 503
    assert "user directory (LDAP) is not reachable" in info.value.jupyterhub_message
    assert "timed out" in info.value.log_message
    assert blocking.calls and blocking.on_loop == []
    assert "NB_UID" not in spawner.environment

    caplog.clear()
    await setup_ldap_entry_hook(spawner)  # resumed: the very next spawn works
    assert spawner.environment["NB_UID"] == "10002"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert sorted(e["uidNumber"] for e in people(slapd)) == [10000, 10001, 10002]


async def test_bind_refused_fails_spawn(slapd):
    config = example_ldap_config(slapd, password="wrong")
    with pytest.raises(LDAPSpawnError) as info:
        await setup_ldap_entry_hook(await spawner_for(config, "frank"))
    assert info.value.status_code == 500
    assert "DirectoryBindRefused" in info.value.log_message
    assert people(slapd) == []


async def test_missing_object_class_fails_before_touching_the_counter(slapd):
    config = example_ldap_config(slapd, object_classes=["x-certsDistinguishedName", "posixAccount", "x-notLoaded"])
    with pytest.raises(LDAPSpawnError) as info:
        await setup_ldap_entry_hook(await spawner_for(config, "grace"))
    assert "no object class x-notLoaded" in info.value.log_message
    assert people(slapd) == []
    assert counter(slapd) == 9999


HOSTILE = [
    "*",
    "*)(uid=*",
    "a)(|(objectClass=*)",
    "x\\2a",
    "cn=admin,dc=example,dc=org",
    "a,ou=people,dc=example,dc=org",
    "a+uid=root",
    '#"<>;=\\',
    " leading and trailing ",
    "x" * 128,
]


@pytest.mark.parametrize("value", HOSTILE)
async def test_hostile_names_stay_data(slapd, value):
    config = example_ldap_config(slapd)
    before = {e["dn"] for e in slapd.entries()}
    await setup_ldap_entry_hook(await spawner_for(config, "mallory"))

    # the same value as username (uid, filters) and as CN (the DN); "/" and "+" separate the
    # subject's fields, so they cannot be part of a CN (test_unknown_submitted_attribute...)
    cn = value.replace("/", " ").replace("+", " ")
    spawner = await spawner_for(config, value, cn=cn, email="m@example.org")
    await setup_ldap_entry_hook(spawner)
    again = await spawner_for(config, value, cn=cn, email="m@example.org")
    await setup_ldap_entry_hook(again)

    after = slapd.entries()
    new = [e for e in after if e["dn"] not in before]
    assert len(new) == 2  # mallory and the hostile user, nothing else
    hostile = [e for e in new if e.get("uid") == [value]]
    assert len(hostile) == 1
    assert hostile[0]["dn"].endswith(",ou=people,dc=example,dc=org")
    assert again.environment["NB_UID"] == spawner.environment["NB_UID"] == "10001"
    assert again.environment["NB_USER"] == value
    assert hostile[0]["cn"] == [cn]
    assert counter(slapd) == 10001


async def test_too_long_values_are_refused(slapd):
    config = example_ldap_config(slapd)
    with pytest.raises(LDAPSpawnError) as info:
        await setup_ldap_entry_hook(await spawner_for(config, "x" * 5000))
    assert info.value.status_code == 400
    assert "longer than 128" in info.value.jupyterhub_message
    assert people(slapd) == [] and counter(slapd) == 9999


async def test_value_the_directory_refuses_gives_400_and_returns_the_uid(slapd):
    # homeDirectory (IA5String) cannot hold non-ASCII: the add is refused after the uid was taken
    config = example_ldap_config(slapd)
    with pytest.raises(LDAPSpawnError) as info:
        await setup_ldap_entry_hook(await spawner_for(config, "jürgen", email="j@example.org"))
    assert info.value.status_code == 400
    assert "does not accept these account details" in info.value.jupyterhub_message
    assert people(slapd) == [] and counter(slapd) == 9999


async def test_unknown_submitted_attribute_is_refused(slapd):
    config = example_ldap_config(slapd)
    spawner = make_spawner("ivan", config)
    await spawner.user.save_auth_state(
        {"X-Certificate-Subject": "/C=DK/CN=Ivan/emailAddress=i@x.org/uidNumber=0"}
    )
    with pytest.raises(LDAPSpawnError) as info:
        await setup_ldap_entry_hook(spawner)
    assert info.value.status_code == 400
    assert "uidNumber" in info.value.jupyterhub_message
    assert people(slapd) == []


@pytest.mark.parametrize("mode", ["ldaps", "starttls"])
async def test_tls_with_ca_verification(slapd, mode):
    url = slapd.ldaps_url if mode == "ldaps" else slapd.url
    config = example_ldap_config(slapd, url=url, start_tls=(mode == "starttls"))
    spawner = await spawner_for(config, "judy")
    await setup_ldap_entry_hook(spawner)
    assert spawner.environment["NB_UID"] == "10000"


@pytest.mark.parametrize("mode", ["ldaps", "starttls"])
async def test_tls_with_untrusted_certificate_is_refused(slapd, tmp_path, mode):
    from tests.fixtures.slapd import make_ca

    other_ca, _ = make_ca(tmp_path, "other-ca")
    url = slapd.ldaps_url if mode == "ldaps" else slapd.url
    config = example_ldap_config(
        slapd, url=url, start_tls=(mode == "starttls"), ca_certs_file=str(other_ca)
    )
    with pytest.raises(LDAPSpawnError) as info:
        await setup_ldap_entry_hook(await spawner_for(config, "kim"))
    assert info.value.status_code == 503
    assert people(slapd) == []


async def test_hook_does_not_block_the_event_loop(slapd):
    """While 20 first spawns run, no ldap3 network call runs on the event loop's thread.

    That is what proves the contract: a blocking call is a blocking call however fast slapd
    answers, and how long the loop stalls depends on the machine's load. Measured stalls are in
    benchmarks/ldap_hooks.py."""
    import ldap3

    from tests.fixtures.loop_thread import blocking_calls

    config = example_ldap_config(slapd)
    spawners = [await spawner_for(config, f"tick{i}") for i in range(20)]
    watched = [(ldap3.Connection, name)
               for name in ("start_tls", "bind", "search", "add", "modify", "delete", "unbind")]
    with blocking_calls(watched) as blocking:
        await asyncio.gather(*(setup_ldap_entry_hook(s) for s in spawners))
    assert len(people(slapd)) == 20
    assert {"Connection.search", "Connection.add", "Connection.modify"} <= set(blocking.calls)
    assert blocking.on_loop == [], f"ldap3 called on the event loop: {sorted(set(blocking.on_loop))}"


# ---- the counter is never handed out twice ---------------------------------------------------
def add_then(monkeypatch, after):
    """Make every LDAPClient.add apply the add on the server, then run ``after(self, call)``
    (``call`` counts from 1): a stand-in for an answer lost on the way back."""
    from ldap_hooks.client import LDAPClient

    calls = []

    async def add(self, dn, object_classes, attributes):
        def op(conn):
            calls.append(dn)
            conn.add(dn, list(object_classes), dict(attributes))
            after(len(calls))

        await self._call(op)

    monkeypatch.setattr(LDAPClient, "add", add)
    return calls


async def test_add_resent_after_a_lost_answer_keeps_its_uid(slapd, monkeypatch):
    """The server applies the add, the answer is lost (connection reset), the client sends the
    add again on a fresh connection and gets entryAlreadyExists: that entry is this spawn's own,
    so its uid stays taken and the next user gets the next one."""
    from ldap3.core.exceptions import LDAPSocketReceiveError

    config = example_ldap_config(slapd)
    await setup_ldap_entry_hook(await spawner_for(config, "warm"))  # a pooled connection: retried

    def lose_first_answer(call):
        if call == 1:
            raise LDAPSocketReceiveError("connection reset after the add was applied")

    calls = add_then(monkeypatch, lose_first_answer)
    alice = await spawner_for(config, "alice")
    result = await setup_ldap_entry_hook(alice)
    assert len(calls) == 2  # sent twice, applied once
    assert result.created and alice.environment["NB_UID"] == "10001"
    monkeypatch.undo()

    bob = await spawner_for(config, "bob")
    await setup_ldap_entry_hook(bob)
    assert bob.environment["NB_UID"] == "10002"
    uids = [e["uidNumber"] for e in people(slapd)]
    assert sorted(uids) == [10000, 10001, 10002]
    assert counter(slapd) == 10002


@pytest.mark.parametrize("outcome", ["timeout", "cancelled"])
async def test_add_with_unknown_outcome_keeps_its_uid(slapd, monkeypatch, caplog, outcome):
    """The add was applied, but the hook never learns it (timed out, also on the retry; spawn
    cancelled): the uid is not given back, so nobody else gets it; the user's next spawn finds
    the entry."""
    from ldap_hooks.client import LDAPClient
    from ldap_hooks.errors import DirectoryUnavailable

    config = example_ldap_config(slapd)
    real_add = LDAPClient.add
    lost = DirectoryUnavailable("lost connection: timed out") if outcome == "timeout" else asyncio.CancelledError()

    async def add_then_lost(self, *args):
        await real_add(self, *args)
        raise lost

    monkeypatch.setattr(LDAPClient, "add", add_then_lost)
    with pytest.raises(LDAPSpawnError if outcome == "timeout" else asyncio.CancelledError):
        await setup_ldap_entry_hook(await spawner_for(config, "alice"))
    monkeypatch.undo()
    assert [e["uidNumber"] for e in people(slapd)] == [10000]
    assert counter(slapd) == 10000
    assert any("uidNumber=10000" in r.getMessage() and "stays unused" in r.getMessage() for r in caplog.records)

    bob = await spawner_for(config, "bob")
    await setup_ldap_entry_hook(bob)
    assert bob.environment["NB_UID"] == "10001"
    again = await spawner_for(config, "alice")
    assert not (await setup_ldap_entry_hook(again)).created
    assert again.environment["NB_UID"] == "10000"


async def test_add_beaten_by_a_concurrent_spawn_of_the_same_user_gives_the_uid_back(slapd, monkeypatch):
    """Between the increment and the add another hub created the same user's entry (with its
    own uid): the add is refused, the uid goes back to the counter and that entry is used."""
    from ldap_hooks.client import LDAPClient

    config = example_ldap_config(slapd)
    real_add = LDAPClient.add

    async def other_hub_first(self, dn, object_classes, attributes):
        conn = slapd.connection()
        conn.add(dn, list(object_classes), {**attributes, "uidNumber": "20000"})
        conn.unbind()
        await real_add(self, dn, object_classes, attributes)

    monkeypatch.setattr(LDAPClient, "add", other_hub_first)
    spawner = await spawner_for(config, "carol")
    result = await setup_ldap_entry_hook(spawner)
    assert not result.created and spawner.environment["NB_UID"] == "20000"
    assert counter(slapd) == 9999
    assert [e["uidNumber"] for e in people(slapd)] == [20000]


# ---- operator mistakes get the same clear failure ---------------------------------------------
@pytest.mark.parametrize(
    "settings, logged",
    [
        ({"url": "ldap://127.0.0.1:notaport"}, "LDAP.url 'ldap://127.0.0.1:notaport' is not a usable LDAP URL"),
        ({"url": "ldap://127.0.0.1:99999"}, "is not a usable LDAP URL"),
        ({"ca_certs_file": "/nonexistent/ca.pem", "start_tls": True}, "LDAP.ca_certs_file '/nonexistent/ca.pem' cannot be read"),
        ({"ca_certs_file": __file__, "start_tls": True}, "cannot be read as PEM CA certificates"),
        ({"search_attribute_queries": [{"search_base": "dc=example,dc=org", "search_filter": "(objectClass=x-nextUserIdentifier"}]},
         "LDAP.search_attribute_queries[0] ('(objectClass=x-nextUserIdentifier' under 'dc=example,dc=org'): "
         "ldap3 refused the request (LDAPInvalidFilterError"),
    ],
    ids=["port-not-a-number", "port-out-of-range", "ca-file-missing", "ca-file-not-pem", "filter-unbalanced"],
)
async def test_configuration_errors_fail_the_spawn_clearly(slapd, caplog, settings, logged):
    config = example_ldap_config(slapd, **settings)
    with pytest.raises(LDAPSpawnError) as info:
        await setup_ldap_entry_hook(await spawner_for(config, "oscar"))
    error = info.value
    assert error.status_code == 500
    assert "user-directory (LDAP) setup is broken" in error.jupyterhub_message
    assert "LDAPConfigError" in error.log_message and logged in error.log_message
    assert any(r.levelname == "ERROR" and logged in r.getMessage() for r in caplog.records)
    assert people(slapd) == [] and counter(slapd) == 9999


# ---- logs above DEBUG carry no user data ------------------------------------------------------
async def test_user_data_stays_out_of_logs_above_debug(slapd, caplog):
    caplog.set_level("DEBUG")
    config = example_ldap_config(slapd)
    secrets = ["Secret Person", "hidden@example.org"]

    async def hook(name, cn="Secret Person", email="hidden@example.org"):
        return await setup_ldap_entry_hook(await spawner_for(config, name, cn=cn, email=email))

    await hook("alice")  # created
    await hook("alice")  # found
    with pytest.raises(LDAPSpawnError):  # the directory refuses the data (non-ASCII home)
        await hook("jürgen")
    spawner = make_spawner("ivan", config)
    await spawner.user.save_auth_state({"X-Certificate-Subject": "/CN=Secret Person/secretName=1"})
    with pytest.raises(LDAPSpawnError) as refused:
        await setup_ldap_entry_hook(spawner)
    assert "secretName" in refused.value.jupyterhub_message  # the user sees what was wrong
    # two entries for one user: the operator learns which attributes clash, not the values
    conn = slapd.connection()
    for i in range(2):
        conn.add(f"cn=Secret Person {i},ou=people,dc=example,dc=org", ["x-certsDistinguishedName", "posixAccount"],
                 {"uid": "dup", "uidNumber": 30000 + i, "gidNumber": 100, "homeDirectory": "/home/dup",
                  "email": "hidden@example.org"})
    conn.unbind()
    with pytest.raises(LDAPSpawnError) as ambiguous:
        await hook("dup")

    above_debug = [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]
    text = "\n".join(above_debug)
    for secret in secrets + ["secretName", "ou=people"]:
        assert secret not in text, secret
    # what the operator needs is there: who, which step, which values are the hub's own
    assert "LDAP: created the entry of user alice with uidNumber=10000" in text
    assert "LDAP: found the entry of user alice" in text
    assert "invalidAttributeSyntax" in text and "outside LDAP.submit_attribute_names" in text
    assert "values of uid of this user" in ambiguous.value.log_message
    debug = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert "Secret Person" in debug  # the DN is there for whoever turns DEBUG on


# ---- shutdown -----------------------------------------------------------------------------------
async def test_close_unbinds_in_the_worker_pool(slapd, monkeypatch):
    """close() returns at once on the event loop; the unbind runs in a worker thread."""
    import threading

    import ldap3

    from ldap_hooks.client import Settings, get_client

    config = example_ldap_config(slapd)
    await setup_ldap_entry_hook(await spawner_for(config, "alice"))
    from ldap_hooks.hooks import ldap_options

    client = get_client(Settings.from_config(ldap_options(config)))
    idle = len(client._idle)
    assert idle
    unbound = []
    release = threading.Event()  # the unbinds wait for it: close_clients() must not
    real_unbind = ldap3.Connection.unbind

    def held_unbind(conn, *args, **kwargs):
        release.wait(30)
        unbound.append(threading.current_thread().name)
        return real_unbind(conn, *args, **kwargs)

    monkeypatch.setattr(ldap3.Connection, "unbind", held_unbind)
    close_clients()  # returns while every unbind is still held
    assert unbound == []
    release.set()
    for _ in range(100):
        if len(unbound) == idle:
            break
        await asyncio.sleep(0.05)
    assert len(unbound) == idle and all(name.startswith("ldap-hooks") for name in unbound), unbound
    with pytest.raises(Exception, match="closed"):
        await client.search("dc=example,dc=org", "(objectClass=*)")


# ---- published options: submitted data from user.data, values from the spawner ------------------
async def test_user_data_path_keys_and_spawner_attribute(slapd):
    from ldap_hooks import SPAWNER_ATTRIBUTE

    base = example_ldap_config(slapd)
    config = example_ldap_config(
        slapd,
        submit_spawner_attribute="user.data",
        submit_spawner_attribute_keys=("User", "CERT"),
        dynamic_attributes={**base.LDAP.dynamic_attributes, "loginShell": [SPAWNER_ATTRIBUTE, "environment.LOGIN_SHELL"]},
        object_attributes={**base.LDAP.object_attributes, "loginShell": "{loginShell}"},
    )
    spawner = make_spawner("uma", config)
    spawner.user.data = {"User": {"CERT": SUBJECT.format(cn="Uma U", email="uma@example.org")}}
    spawner.environment = {"LOGIN_SHELL": "/bin/zsh"}
    await setup_ldap_entry_hook(spawner)

    [entry] = people(slapd)
    assert entry["cn"] == ["Uma U"] and entry["email"] == ["uma@example.org"]
    assert entry["loginShell"] == "/bin/zsh"
    assert spawner.environment["NB_UID"] == "10000"
