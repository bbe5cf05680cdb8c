"""The spawn-time input surfaces of a real hub with MultipleSpawner, attacked with bad input.

Surfaces: REST ``POST /hub/api/users/NAME/server`` (its JSON body, with or without a
``user_options`` member), the spawn form ``POST /hub/spawn/NAME``, and the spawn page that
renders options stored by ``PATCH /hub/api/users/NAME/servers/...``. The contract: every
request is answered below 500; a refusal is a 4xx with a message and starts nothing (the REST
API shows no server, the user has no process); no traceback in the hub's log other than
JupyterHub logging the 4xx refusals themselves.

The fuzz tests run Hypothesis with a fixed seed (``derandomize``) and a bounded number of
examples against one hub each. Requests that happen to be valid spawn for real and are stopped.
"""

import json
import re

import pytest
import requests
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tornado.web import HTTPError

from multiplespawner.catalogue import load_catalogue
from multiplespawner.choices import OPTION_KEYS, resolve_choice
from multiplespawner.form import options_from_form
from tests.fixtures.procs import wait_until
from tests.integration.test_multiple_hub import (
    catalogue,
    hub_config,
    login,
    processes_of,
    write_catalogue,
)

TEMPLATE_NAMES = ["local-mock", "local-other", "course-b-only", "nope", ""]
NUMBER_TEXTS = ["1", "0.5", "2", "-1", "1e400", "NaN", "inf", "9" * 400, " 1 ", "0x10", "1_0"]

#: JupyterHub logs the refusal it answers 4xx with (``Failed to spawn ... with form``,
#: ``Couldn't parse JSON``) with its traceback; any other exception in a traceback is a bug.
ALLOWED_EXCEPTION_LINE = re.compile(
    r"^(multiplespawner\.errors\.SpawnError: |tornado\.web\.HTTPError: HTTP 4\d\d|json\.decoder\.JSONDecodeError: )"
)


def _huge_text(char: str, n: int) -> str:
    return char * n


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()  # NaN and infinities included: Python's json reads them
    | st.text(max_size=30)
    | st.builds(_huge_text, st.characters(), st.integers(min_value=1_000, max_value=100_000))
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
#: option values: plausible (template names, numbers as text) or anything JSON can carry
option_values = st.sampled_from(TEMPLATE_NAMES) | st.sampled_from(NUMBER_TEXTS) | json_values
number_values = (st.integers(min_value=-(10**400), max_value=10**400) | st.floats()
                 | st.sampled_from(NUMBER_TEXTS) | json_values)
#: only the known keys, each optional: the values reach the per-field checks
known_options = st.fixed_dictionaries({}, optional={
    "template": st.sampled_from(TEMPLATE_NAMES) | json_values,
    "provider": st.sampled_from(["local", "docker"]) | json_values,
    **{key: number_values for key in ("cpu", "memory_mb", "gpus", "lifetime_minutes")},
})
any_options = st.dictionaries(st.sampled_from(OPTION_KEYS) | st.text(max_size=20), option_values,
                              min_size=1, max_size=6)
user_options = known_options | any_options
rest_bodies = st.one_of(
    st.builds(lambda o: {"user_options": o}, user_options | json_values),
    user_options,  # JupyterHub's older form: the body is the options
    st.builds(lambda d, o: {"display_name": d, "user_options": o}, json_values, user_options),
    json_values,
)
form_field_names = (
    st.sampled_from(["template", "provider", "resource_type"])
    | st.builds(lambda t, k: f"{t}.{k}", st.sampled_from(TEMPLATE_NAMES), st.sampled_from(OPTION_KEYS))
    | st.text(min_size=1, max_size=20)
)
form_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40) | st.sampled_from(
    TEMPLATE_NAMES + NUMBER_TEXTS) | st.builds(_huge_text, st.sampled_from("9x{"), st.integers(1_000, 100_000))
form_bodies = st.dictionaries(form_field_names, st.lists(form_text, min_size=1, max_size=3), min_size=1, max_size=6)

#: Valid requests that spawn for real before further valid ones are skipped.
MAX_REAL_SPAWNS = 3
FUZZ_SETTINGS = settings(derandomize=True, max_examples=150, deadline=None, database=None)


@pytest.fixture
def fuzz_hub(hub_factory, unix_user, tmp_path):
    """(hub, user, catalogue file): MultipleSpawner on the local-process catalogue; the user has a Unix account."""
    tmp_path.chmod(0o755)
    cat = tmp_path / "catalogue.json"
    write_catalogue(cat, catalogue(lifetime={"default": 30, "min": 15, "max": 60}))
    hub = hub_factory(hub_config(cat))
    name = unix_user()
    hub.create_user(name, groups=["course-a"])
    return hub, name, cat


def notebook_processes(user: str) -> list[str]:
    """The user's mock notebook servers (what a spawn here starts).

    Filtered by command: the uid of a Unix user that another test on this machine just removed
    may be reused for this test's user while that test's processes still end.
    """
    return [p for p in processes_of(user) if "jupyterhub.tests.mocksu" in p]


class Outcomes:
    """Per-surface tally of answers; for the accepted ones the server is awaited and stopped."""

    def __init__(self, hub, name):
        self.hub, self.name = hub, name
        self.statuses: dict[int, int] = {}
        self.accepted = 0  #: spawns that started (and were stopped)

    def check(self, response: requests.Response, accepted: tuple[int, ...], what) -> None:
        status = response.status_code
        self.statuses[status] = self.statuses.get(status, 0) + 1
        assert status < 500, (what, status, response.text[:2000], self.hub.log_tail())
        if status in accepted:
            self.accepted += 1
            self.hub.wait_for_ready(self.name)
            self.hub.stop_server(self.name)
            wait_until(lambda: notebook_processes(self.name) == [], timeout=30, message="server processes gone")
            return
        assert 400 <= status < 500, (what, status, response.text[:2000])
        assert self.hub.user(self.name)["servers"] == {}, (what, status)
        assert notebook_processes(self.name) == [], (what, status)


def assert_log_clean(hub) -> None:
    """No 5xx answered and no traceback other than those of logged 4xx refusals."""
    log = hub.log_text()
    assert not re.search(r"\] 5\d\d (GET|POST|PATCH|PUT|DELETE) ", log), log[-5000:]
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last):"):
            end = next(j for j in range(i + 1, len(lines)) if not lines[j].startswith((" ", "\t")))
            assert ALLOWED_EXCEPTION_LINE.match(lines[end]), "\n".join(lines[i:end + 1])


def post_json(hub, name, raw: str) -> requests.Response:
    return hub.api("POST", f"/users/{name}/server", data=raw.encode("utf-8", "surrogatepass"),
                   headers={"Content-Type": "application/json"})


def test_reported_inputs_are_refused_with_a_message(fuzz_hub):
    """The review's cases: a 400-digit integer (was a 500: OverflowError), numbers as text that
    do not fit, a body nested past the parser's recursion limit, choices in the spawn page's
    query string, and a spawn page rendering options a user stored through PATCH."""
    hub, name, _ = fuzz_hub
    cases = [
        ('{"user_options": {"template": "local-mock", "memory_mb": %s}}' % ("9" * 400),
         "memory_mb must be a number"),
        ('{"user_options": {"template": "local-mock", "memory_mb": 1e400}}', "memory_mb must be a number"),
        ('{"user_options": {"template": "local-mock", "cpu": NaN}}', "cpu must be a number"),
        ('{"user_options": {"template": "local-mock", "cpu": true}}', "cpu must be a number"),
        ('{"user_options": {"template": "local-mock", "cpu": "%s"}}' % ("1" * 400),
         "cpu must be a number of at most 32 characters"),
        ('{"user_options": {"template": {"$ne": null}}}', "template must be a template name"),
        ('{"user_options": {"template": "%s"}}' % ("x" * 100_000), "There is no template named 'xxx"),
        ('{"user_options": {"template": "local-mock", "provider": ["local"]}}', "does not run on provider"),
        ('{"user_options": {"template": "local-mock", "colour": "red"}}', "Unknown option(s) 'colour'"),
        ("[" * 100_000 + "]" * 100_000, "Invalid JSON"),
        ('{"user_options": ' + "[" * 5_000 + "]" * 5_000 + "}", "Invalid JSON"),
        ('{"user_options": [1]}', "user_options must be an object"),
    ]
    outcomes = Outcomes(hub, name)
    for raw, message in cases:
        r = post_json(hub, name, raw)
        outcomes.check(r, accepted=(), what=raw[:80])
        assert message in r.json()["message"], (raw[:80], r.json())
        assert len(r.json()["message"]) < 1000

    s = login(hub, name)
    r = s.post(f"{hub.url}/hub/spawn/{name}", data={
        "_xsrf": s.cookies.get("_xsrf"), "template": "local-mock", "local-mock.memory_mb": "9" * 400},
        allow_redirects=False, timeout=30)
    outcomes.check(r, accepted=(), what="form")
    assert "memory_mb must be a number of at most 32 characters" in r.text

    # stored options the form cannot use: the spawn page shows the defaults
    r = hub.api("PATCH", f"/users/{name}/server",
                json={"user_options": {"template": {"x": 1}, "cpu": 10**400, "memory_mb": {"a": []}}})
    assert r.status_code in (200, 204), r.text
    r = s.get(f"{hub.url}/hub/spawn/{name}", timeout=30)
    assert r.status_code == 200, r.text[-2000:]
    assert 'name="local-mock.cpu" value="1"' in r.text
    # and spawning with them (an empty body reuses them) is a 400, not a 500
    r = hub.api("POST", f"/users/{name}/server")
    outcomes.check(r, accepted=(), what="stored options")
    assert "template must be a template name" in r.json()["message"]

    # the same fields in the spawn page's query string: the same check (was a TypeError shown
    # on the page), and a good query spawns
    r = s.get(f"{hub.url}/hub/spawn/{name}", params={"template": "local-mock", "local-mock.cpu": "9e999"},
              allow_redirects=False, timeout=30)
    outcomes.check(r, accepted=(), what="query")
    assert "cpu must be a number" in r.text and "TypeError" not in r.text, r.text[-2000:]
    r = s.get(f"{hub.url}/hub/spawn/{name}", params={"template": "local-mock", "local-mock.cpu": "0.5"},
              allow_redirects=False, timeout=30)
    outcomes.check(r, accepted=(302, 303), what="good query")
    assert outcomes.accepted == 1
    assert_log_clean(hub)


def test_fuzz_rest_user_options(fuzz_hub):
    hub, name, cat = fuzz_hub
    outcomes = Outcomes(hub, name)

    @FUZZ_SETTINGS
    @given(rest_bodies)
    def check(body):
        if outcomes.accepted >= MAX_REAL_SPAWNS:  # as in the form test: refusals are fuzzed
            options = options_in_body(body)
            assume(options is None or not would_accept(cat, options))
        raw = json.dumps(body)  # NaN and Infinity as Python writes them
        outcomes.check(post_json(hub, name, raw), accepted=(201, 202), what=raw[:300])

    check()
    assert_log_clean(hub)
    print("REST answers by status:", outcomes.statuses)
    assert sum(n for s, n in outcomes.statuses.items() if 400 <= s < 500) >= 100


def would_accept(cat, options) -> bool:
    """Whether MultipleSpawner's own checks accept these ``user_options`` for a course-a user."""
    try:
        resolve_choice(load_catalogue([cat]), options, user_name="any", groups=["course-a"], admin=False)
    except HTTPError:
        return False
    return True


def options_in_body(body):
    """The ``user_options`` JupyterHub takes from a REST body ({} for none), or None if it
    refuses the body itself (see ``UserServerAPIHandler.get_server_json_body``)."""
    if not body:
        return {}
    if not isinstance(body, dict):
        return None
    if "user_options" in body or "display_name" in body:
        options = body.get("user_options")
        return options or {} if isinstance(options, (dict, type(None))) else None
    return body


def test_fuzz_spawn_form(fuzz_hub):
    hub, name, cat = fuzz_hub
    session = login(hub, name)
    outcomes = Outcomes(hub, name)

    @FUZZ_SETTINGS
    @given(form_bodies)
    def check(fields):
        # most forms without a template field are valid (the first template, its defaults);
        # a few spawn for real, the rest are not sent: the refusals are what is fuzzed here
        if outcomes.accepted >= MAX_REAL_SPAWNS:
            assume(not would_accept(cat, options_from_form(fields)))
        data = [(k, v) for k, values in fields.items() for v in values]
        data.append(("_xsrf", session.cookies.get("_xsrf")))
        r = session.post(f"{hub.url}/hub/spawn/{name}", data=data, allow_redirects=False, timeout=60)
        outcomes.check(r, accepted=(302, 303), what=str(data)[:300])
        if 400 <= r.status_code < 500:
            assert 'class="spawn-error-msg alert alert-danger"' in r.text, r.text[-2000:]

    check()
    assert_log_clean(hub)
    print("form answers by status:", outcomes.statuses)
    assert sum(n for s, n in outcomes.statuses.items() if 400 <= s < 500) >= 100
