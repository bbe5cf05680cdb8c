"""Template-editing permissions from RBAC scopes."""

from multiplespawner.editor.access import Editor, editor_from_scopes


def test_no_scope_no_editor():
    assert editor_from_scopes("student", ["self", "access:services!service=templates"]) is None
    assert editor_from_scopes("student", None) is None


def test_unfiltered_scope_edits_everything():
    ed = editor_from_scopes("boss", ["custom:templates:edit", "self"])
    assert ed == Editor("boss", True, frozenset())
    assert ed.refusal(None, {"name": "x"}) is None
    assert ed.refusal({"name": "x", "tags": ["a"]}, None) is None


def test_group_filtered_scope_edits_tagged_templates_only():
    ed = editor_from_scopes("ta", ["custom:templates:edit!group=course-a", "custom:templates:edit!group=course-c"])
    assert ed.tags == {"course-a", "course-c"}
    a = {"name": "a", "tags": ["course-a"]}
    b = {"name": "b", "tags": ["course-b"]}
    untagged = {"name": "u"}
    assert ed.may_edit(a) and not ed.may_edit(b) and not ed.may_edit(untagged)
    assert ed.refusal(a, {**a, "description": "x"}) is None
    assert "only edit templates tagged" in ed.refusal(b, {**b, "tags": ["course-a"]})
    assert "must keep a tag" in ed.refusal(a, {**a, "tags": ["course-b"]})
    assert "must keep a tag" in ed.refusal(None, untagged)
    assert ed.refusal(None, {"name": "n", "tags": ["course-c"]}) is None
    assert ed.refusal(a, None) is None
    assert ed.refusal(b, None) is not None
