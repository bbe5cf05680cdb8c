"""Quotas and the waiting line (multiplespawner/admission.py), with stand-in spawners: places,
order of arrival, per-group pools, per-user caps, cancel, timeout, estimates, and the
catalogue/editor rules for the ``quota`` field."""

import asyncio
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

from multiplespawner import admission as adm
from multiplespawner.admission import AdmissionControl, Place, Quota, ordinal
from multiplespawner.catalogue import CatalogueError, Template, build_catalogue, validate_document
from multiplespawner.editor.access import CourseRules, Editor


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def spec(quota=None, **extra):
    return {"name": "gpu", "display_name": "GPU notebook", "resource_type": "local", "providers": ["local"],
            "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner"}, **({"quota": quota} if quota else {}),
            **extra}


def control():
    holders = []
    clock = Clock()
    return AdmissionControl(lambda: list(holders), clock), holders, clock


def holder(holders, deadline=None):
    h = SimpleNamespace(quota_place=None, deadline=deadline)
    holders.append(h)
    return h


def admit(ctl, h, template_spec, user="ann", groups=(), said=None):
    return ctl.admit(h, Template(template_spec, "test"), user, groups, (said if said is not None else []).append)


async def test_places_are_taken_atomically_and_the_rest_refused_with_429():
    ctl, holders, _ = control()
    t = spec({"running": 2})
    results = await asyncio.gather(*(admit(ctl, holder(holders), t, user=f"u{i}") for i in range(20)),
                                   return_exceptions=True)
    taken = [r for r in results if isinstance(r, Place)]
    refused = [r for r in results if not isinstance(r, Place)]
    assert len(taken) == 2 and len(refused) == 18
    assert {e.status_code for e in refused} == {429}
    assert refused[0].message == "GPU notebook is full: all 2 places are in use. Try again when a server of it has stopped."
    assert ctl.counts() == {"gpu": (2, 0)}


async def test_the_line_admits_in_order_of_arrival_as_places_free():
    ctl, holders, clock = control()
    t = spec({"running": 1, "queue": True})
    first = holder(holders)
    await admit(ctl, first, t)
    waiters = [holder(holders) for _ in range(3)]
    messages = [[] for _ in waiters]
    tasks = []
    for i, w in enumerate(waiters):
        tasks.append(asyncio.ensure_future(admit(ctl, w, t, user=f"w{i}", said=messages[i])))
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    assert [m[-1].split(",")[0] for m in messages] == ["1st in line for GPU notebook", "2nd in line for GPU notebook",
                                                       "3rd in line for GPU notebook"]
    assert ctl.counts() == {"gpu": (1, 3)}
    order = []
    current = first
    for _ in waiters:
        clock.now += 120
        ctl.release(current)
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        (task,) = done
        tasks.remove(task)
        current = next(w for w in waiters if w.quota_place is not None)
        order.append(current.quota_place.user)
    assert order == ["w0", "w1", "w2"]
    # the 2nd waiter moved up when the 1st got in; sessions of 120 s make the estimate
    assert messages[1][-1] == "1st in line for GPU notebook, about 2 min"


async def test_a_newcomer_does_not_jump_the_line():
    ctl, holders, _ = control()
    t = spec({"running": 1, "queue": True})
    first = holder(holders)
    await admit(ctl, first, t)
    waiter = asyncio.ensure_future(admit(ctl, holder(holders), t, user="early"))
    await asyncio.sleep(0)
    ctl.release(first)
    late = holder(holders)
    late_task = asyncio.ensure_future(admit(ctl, late, t, user="late"))
    await asyncio.sleep(0.01)
    assert (await waiter).user == "early"
    assert late.quota_place is None
    late_task.cancel()


async def test_cancelled_and_timed_out_waiters_leave_the_line(monkeypatch):
    monkeypatch.setattr(adm, "RECHECK_SECONDS", 0.05)
    ctl, holders, _ = control()
    t = spec({"running": 1, "queue": True, "queue_timeout": 0.2})
    await admit(ctl, holder(holders), t)
    cancelled = holder(holders)
    task = asyncio.ensure_future(admit(ctl, cancelled, t, user="bob"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ctl.line("gpu") == [] and cancelled.quota_place is None
    with pytest.raises(adm.SpawnError) as e:
        await admit(ctl, holder(holders), t, user="carl")
    assert e.value.status_code == 429 and e.value.reason == "queue_timeout"
    assert "Gave up waiting for a place of GPU notebook after" in e.value.message
    assert ctl.line("gpu") == []


async def test_per_group_pools_and_no_head_of_line_blocking():
    ctl, holders, _ = control()
    t = spec({"running": 1, "per": "group", "queue": True}, access={"groups": ["physics", "maths"]})
    p1 = holder(holders)
    assert (await admit(ctl, p1, t, user="p1", groups=["physics"])).pool == "physics"
    blocked = asyncio.ensure_future(admit(ctl, holder(holders), t, user="p2", groups=["physics"]))
    await asyncio.sleep(0)
    # a maths student is not held back by the physics student waiting ahead
    assert (await admit(ctl, holder(holders), t, user="m1", groups=["maths", "physics"])).pool == "maths"
    # an admin outside both groups has a pool of their own, as large
    assert (await admit(ctl, holder(holders), t, user="root", groups=[])).pool == ""
    assert not blocked.done()
    ctl.release(p1)
    assert (await blocked).pool == "physics"


async def test_per_user_cap_counts_held_and_waiting_servers():
    ctl, holders, _ = control()
    t = spec({"running": 1, "per_user": 2, "queue": True})
    await admit(ctl, holder(holders), t)
    waiting = asyncio.ensure_future(admit(ctl, holder(holders), t))
    await asyncio.sleep(0)
    with pytest.raises(adm.SpawnError) as e:
        await admit(ctl, holder(holders), t)
    assert e.value.status_code == 429
    assert e.value.message == "You already have 2 servers of GPU notebook; at most 2 may run at once. Stop one first."
    waiting.cancel()


async def test_places_held_before_a_restart_count():
    """What counts is the holders' state (restored by load_state), not this object's memory."""
    ctl, holders, _ = control()
    t = spec({"running": 1})
    restored = holder(holders)
    ctl.restored(restored, Place.from_record("gpu", "ann", {"pool": "", "since": 5.0}))
    with pytest.raises(adm.SpawnError):
        await admit(ctl, holder(holders), t, user="bob")
    ctl.release(restored)
    assert (await admit(ctl, holder(holders), t, user="bob")).user == "bob"


async def test_the_gauges_count_the_hubs_spawners_when_scraped():
    """One control per hub users dict; the gauges are read from the spawners, not remembered."""
    spawners = {}
    user = SimpleNamespace(name="ann", settings={"users": {"ann": SimpleNamespace(spawners=spawners)}})
    ctl = adm.admission_for(user)
    assert adm.admission_for(user) is ctl
    for name in ("a", "b"):
        spawners[name] = SimpleNamespace(quota_place=None, active=True)
    await admit(ctl, spawners["a"], spec({"running": 1, "queue": True}, name="scraped"))
    waiting = asyncio.ensure_future(admit(ctl, spawners["b"], spec({"running": 1, "queue": True}, name="scraped")))
    await asyncio.sleep(0.01)

    def sample(name):
        return REGISTRY.get_sample_value(name, {"template": "scraped"})
    try:
        assert (sample("multiplespawner_running_servers"), sample("multiplespawner_queue_length")) == (1, 1)
        spawners["a"].active = False  # gone without a release: the next scrape knows
        spawners["a"].quota_place = None
        assert sample("multiplespawner_running_servers") == 0
    finally:
        waiting.cancel()
        del adm._CONTROLS[id(user.settings["users"])]  # no made-up template in later tests' scrapes


def test_estimates_from_deadlines_typical_sessions_and_lifetime():
    ctl, holders, clock = control()
    t = Template(spec({"running": 2, "queue": True}, lifetime_minutes={"default": 30}), "test")
    ctl._lifetimes["gpu"] = 30
    a, b = holder(holders, deadline=clock.now + 240), holder(holders)
    a.quota_place = Place("gpu", "", "a", clock.now - 60)
    b.quota_place = Place("gpu", "", "b", clock.now - 600)
    waiter = adm._Waiter(holder(holders), "w", ("",), t.display_name)
    assert ctl.estimate("gpu", waiter, 1) == 240  # a's deadline comes first
    assert ctl.estimate("gpu", waiter, 2) == 1200  # b: 30 min lifetime, 10 used
    assert ctl.estimate("gpu", waiter, 3) == 240 + 1800  # a second round
    ctl._lifetimes["gpu"] = None
    b.deadline = None
    assert ctl.estimate("gpu", waiter, 2) is None  # nothing to go by
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th"]


def test_quota_defaults_and_pools():
    q = Quota.of(spec({"running": 3, "per": "group"}))
    assert q == Quota(3, True, None, False, 600.0)
    assert q.pools_for({"access": {"groups": ["b", "a"]}}, ["a", "b", "c"]) == ("b", "a")
    assert Quota.of(spec()) is None


def catalogue_problems(quota, **extra):
    doc = {"deployments": {"local": [{"name": "here", "provider": "local"}]}, "templates": [spec(quota, **extra)]}
    try:
        build_catalogue([validate_document(doc, "c.json")])
    except CatalogueError as e:
        return [str(p) for p in e.problems]
    return []


@pytest.mark.parametrize("quota, extra, problem", [
    ({"running": 2, "per": "group", "queue": True, "queue_timeout": 60}, {"access": {"groups": ["g"]}}, None),
    ({"per_user": 1}, {}, None),
    ({"running": 2, "per": "group"}, {}, "per: group counts places per group of access.groups"),
    ({"per_user": 1, "queue": True}, {}, "queue needs running"),
    ({"running": 0}, {}, "0 is less than the minimum of 1"),
    ({"queue": True}, {}, "is not valid under any of the given schemas"),
    ({"running": 1, "queue_timeout": 10**6}, {}, "is greater than the maximum of 86400"),
    ({"running": 1, "surprise": 1}, {}, "Additional properties are not allowed"),
])
def test_catalogue_validates_quotas(quota, extra, problem):
    problems = catalogue_problems(quota, **extra)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


TA = Editor("ta", False, frozenset({"physics"}))
GPU = {**spec({"running": 4, "per_user": 1}), "tags": ["physics"], "access": {"groups": ["physics"]}}


@pytest.mark.parametrize("quota, allowed", [
    ({"running": 2, "per_user": 1, "queue": True, "queue_timeout": 900}, True),
    ({"running": 4, "per_user": 1}, True),
    ({"running": 5, "per_user": 1}, False),
    ({"running": 4, "per_user": 2}, False),
    ({"running": 4}, False),
    ({"running": 4, "per_user": 1, "per": "group"}, False),
    ({"running": "9", "per_user": 1}, False),
    (None, False),
])
def test_a_course_editor_may_tighten_a_quota_never_loosen_it(quota, allowed):
    after = {k: v for k, v in GPU.items() if k != "quota"}
    if quota is not None:
        after["quota"] = quota
    refusals = TA.refusals(GPU, after, CourseRules())
    assert (refusals == []) is allowed, refusals
    if not allowed:
        assert refusals[0].startswith("quota: ")


def test_a_course_editor_may_add_a_quota_but_not_copy_a_template_that_has_one():
    plain = {k: v for k, v in GPU.items() if k != "quota"}
    assert TA.refusals(plain, {**plain, "quota": {"running": 1}}, CourseRules()) == []
    copy = {**GPU, "name": "gpu-2"}
    refusals = TA.refusals(None, copy, CourseRules(), existing=[GPU])
    assert any("a copy of a template with a quota would add places" in r for r in refusals), refusals
    assert Editor("op", True, frozenset()).refusals(None, copy, CourseRules(), existing=[GPU]) == []
