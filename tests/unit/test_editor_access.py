"""Template-editing permissions from RBAC scopes, field by field."""

import pytest

from multiplespawner.editor.access import CourseRules, Editor, editor_from_scopes

RULES = CourseRules(max_resources={"cpu": 4, "memory_mb": 4096}, max_lifetime_minutes=480,
                    images=("nb:course",), environment_pattern=r"COURSE_[A-Z0-9_]+")
TA = editor_from_scopes("ta", ["custom:templates:edit!group=course-a", "custom:templates:edit!group=course-c"])

BASE = {
    "name": "a",
    "display_name": "A",
    "resource_type": "container",
    "providers": ["docker"],
    "tags": ["course-a"],
    "access": {"groups": ["course-a"]},
    "resources": {"memory_mb": {"default": 512, "max": 1024}},
    "lifetime_minutes": {"default": 60, "max": 120},
    "environment": {"COURSE_NAME": "a"},
    "spawner": {"class": "dockerspawner.DockerSpawner", "kwargs": {"image": "nb:1", "remove": True}},
}


def test_no_scope_no_editor():
    assert editor_from_scopes("student", ["self", "access:services!service=templates"]) is None
    assert editor_from_scopes("student", None) is None


def test_unfiltered_scope_edits_everything():
    ed = editor_from_scopes("boss", ["custom:templates:edit", "self"])
    assert ed == Editor("boss", True, frozenset())
    assert ed.refusals(None, {"name": "x", "spawner": {"class": "anything"}}, RULES) == []
    assert ed.refusals({"name": "x", "tags": ["a"]}, None, RULES) == []


def test_group_filtered_scope_edits_tagged_templates_only():
    assert TA.tags == {"course-a", "course-c"}
    b = {**BASE, "name": "b", "tags": ["course-b"]}
    assert TA.may_edit(BASE) and not TA.may_edit(b) and not TA.may_edit({"name": "u"})
    assert "only edit templates tagged" in TA.refusals(b, {**b, "tags": ["course-a"]}, RULES)[0]
    assert "must keep a tag" in TA.refusals(BASE, {**BASE, "tags": ["course-b"]}, RULES)[0]
    assert TA.refusals(BASE, None, RULES) == []  # deleting one of theirs
    assert TA.refusals(b, None, RULES) != []
    # creating sets the spawner, which needs the unrestricted permission
    assert any(r.startswith("spawner: ") for r in TA.refusals(None, BASE, RULES))


def _with(path, value):
    spec = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    *parents, last = path.split(".")
    node = spec
    for p in parents:
        node[p] = dict(node[p])
        node = node[p]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return spec


ALLOWED = [
    ("display_name", "New name"),
    ("description", "text"),
    ("enabled", False),
    ("tags", ["course-a", "course-c"]),
    ("access", {"groups": ["course-a", "course-c"]}),
    ("access", {"groups": ["course-a"], "admin_only": True}),
    ("resources", {"memory_mb": {"default": 1024, "min": 256, "max": 4096}, "cpu": {"default": 2, "max": 4}}),
    ("lifetime_minutes", {"default": 60, "max": 480}),
    ("environment", {"COURSE_NAME": "b", "COURSE_DATA": "/data"}),
    ("environment", ...),
    ("spawner.kwargs.image", "nb:course"),
]

REFUSED = [  # field changed, value, words the refusal must contain
    ("spawner.class", "jupyterhub.spawner.SimpleLocalProcessSpawner", "spawner: changing spawner.class needs the unrestricted custom:templates:edit"),
    ("spawner.kwargs.cmd", ["/bin/sh", "-c", "touch /tmp/x"], "spawner.kwargs.cmd needs the unrestricted"),
    ("spawner.kwargs.image", "evil:latest", "course_editor_images"),
    ("spawner.kwargs.remove", ..., "spawner.kwargs.remove"),
    ("configurer", {"class": "ansible"}, "configurer: changing it needs the unrestricted"),
    ("authenticator", {"class": "key"}, "authenticator: changing it needs"),
    ("requires", ["docker"], "requires: changing it needs"),
    ("providers", ["other"], "providers: changing it needs"),
    ("resource_type", "local", "resource_type: changing it needs"),
    ("tags", ["course-a", "course-b"], "course-b needs custom:templates:edit!group=<tag>"),
    ("access", {}, "opening a template to everyone"),
    ("access", ..., "opening a template to everyone"),
    ("access", {"groups": ["course-a", "course-b"]}, "course-b needs custom:templates:edit!group=<group>"),
    ("access", {"groups": ["course-a"], "users": ["mallory"]}, "changing 'users' needs"),
    ("resources", {"memory_mb": {"default": 512, "max": 8192}}, "memory_mb may be at most 4096"),
    ("resources", {"memory_mb": {"default": 512, "max": 1024}, "gpus": {"default": 1}}, "gpus is not among"),
    ("resources", {}, "removing the memory_mb bound"),
    ("lifetime_minutes", {"default": 60, "max": 10000}, "at most 480 minutes"),
    ("lifetime_minutes", ..., "removing the session lifetime"),
    ("environment", {"COURSE_NAME": "a", "LD_PRELOAD": "/tmp/x.so"}, "LD_PRELOAD: course editors may set only"),
]


@pytest.mark.parametrize("path,value", ALLOWED)
def test_course_editor_may_change(path, value):
    assert TA.refusals(BASE, _with(path, value), RULES) == []


@pytest.mark.parametrize("path,value,words", REFUSED)
def test_course_editor_may_not_change(path, value, words):
    reasons = TA.refusals(BASE, _with(path, value), RULES)
    assert len(reasons) == 1 and words in reasons[0], reasons


def test_every_refused_field_is_named():
    after = _with("spawner.class", "jupyterhub.spawner.SimpleLocalProcessSpawner")
    after["configurer"] = {"class": "ansible"}
    after["environment"] = {"PATH": "/tmp"}
    reasons = TA.refusals(BASE, after, RULES)
    assert [r.split(":")[0] for r in reasons] == ["configurer", "environment", "spawner"]


@pytest.mark.parametrize("junk", [None, 1, "x", [], [1], {"groups": "course-a"}, {"groups": [["x"]]}])
def test_malformed_values_are_refusals_not_errors(junk):
    for field in ("tags", "access", "resources", "lifetime_minutes", "environment", "spawner"):
        spec = {**BASE, field: junk}
        assert isinstance(TA.refusals(BASE, spec, RULES), list)


def test_course_editor_creates_templates_as_copies_of_theirs():
    other_course = {**BASE, "name": "b", "tags": ["course-b"], "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner"}}
    copy = {**BASE, "name": "a2", "display_name": "A, second"}
    assert TA.refusals(None, copy, RULES, [other_course, BASE]) == []
    # a copy of another course's template, or one with a different spawner, is not a copy of theirs
    theirs = {**other_course, "name": "b2", "tags": ["course-a"]}
    reasons = TA.refusals(None, theirs, RULES, [other_course, BASE])
    assert reasons[0].startswith("a course editor creates a template as a copy of one of theirs")
    assert any(r.startswith("spawner: ") for r in reasons)
    # the copy's other fields are checked as changes from the original's access and from nothing
    wider = {**copy, "access": {"groups": ["course-a", "course-b"]}, "resources": {"memory_mb": {"default": 9000}}}
    assert [r.split(":")[0] for r in TA.refusals(None, wider, RULES, [BASE])] == ["access", "resources"]
