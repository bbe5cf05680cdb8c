"""Validation shared by the spawn form and REST user_options; the form's content."""

import json

import pytest
from jupyterhub.spawner import SpawnException
from tornado.web import HTTPError

from multiplespawner.catalogue import Template, load_catalogue
from multiplespawner.choices import INTEGER_KEYS, resolve_choice
from multiplespawner.form import options_from_form, render_form

CATALOGUE = {
    "deployments": {
        "local": [{"name": "hub-host", "provider": "local"}],
        "container": [
            {"name": "d1", "provider": "docker", "image": "nb:1"},
            {"name": "d2", "provider": "other", "image": "nb:2"},
        ],
    },
    "templates": [
        {"name": "local", "resource_type": "local", "providers": ["local"],
         "lifetime_minutes": {"default": 60, "min": 15, "max": 120},
         "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner"}},
        {"name": "course-a-box", "display_name": "Course A <box>", "resource_type": "container",
         "providers": ["docker", "other"], "access": {"groups": ["course-a"]},
         "resources": {"cpu": {"default": 1, "min": 0.5, "max": 2},
                       "memory_mb": {"default": 1024, "min": 256, "max": 2048}},
         "spawner": {"class": "dockerspawner.DockerSpawner"}},
        {"name": "course-b-box", "resource_type": "container", "providers": ["docker"],
         "access": {"groups": ["course-b"]}, "spawner": {"class": "dockerspawner.DockerSpawner"}},
        {"name": "off", "resource_type": "local", "providers": ["local"], "enabled": False,
         "spawner": {"class": "jupyterhub.spawner.LocalProcessSpawner"}},
    ],
}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    f = tmp_path_factory.mktemp("cat") / "c.json"
    f.write_text(json.dumps(CATALOGUE))
    return load_catalogue([f])


def choose(catalogue, options, groups=("course-a",), admin=False, unavailable=None):
    return resolve_choice(catalogue, options, user_name="ann", groups=groups, admin=admin,
                          unavailable=unavailable)


def refused(catalogue, options, **kw) -> str:
    with pytest.raises(HTTPError) as info:
        choose(catalogue, options, **kw)
    error = info.value
    # JupyterHub's convention for invalid launch parameters; its pages show jupyterhub_message
    assert isinstance(error, SpawnException) and error.reason == "invalid_user_options"
    assert error.status_code == 400 and error.jupyterhub_message == error.message == error.log_message
    return error.message


def test_defaults(catalogue):
    c = choose(catalogue, {})
    assert c.template.name == "local" and c.lifetime_minutes == 60
    c = choose(catalogue, {"template": "course-a-box"})
    assert c.provider == "docker" and c.deployment["name"] == "d1"
    assert c.resources == {"cpu": 1, "memory_mb": 1024}
    assert c.to_options() == {"template": "course-a-box", "provider": "docker", "cpu": 1, "memory_mb": 1024}


def test_values_from_strings_and_numbers(catalogue):
    c = choose(catalogue, {"template": "course-a-box", "provider": "other", "cpu": "0.5", "memory_mb": 512})
    assert c.deployment["image"] == "nb:2" and c.resources == {"cpu": 0.5, "memory_mb": 512}


@pytest.mark.parametrize("options, message", [
    ({"template": "nope"}, "There is no template named 'nope'."),
    ({"template": "course-b-box"}, "You may not use template 'course-b-box'."),
    ({"template": "off"}, "Template 'off' is disabled."),
    ({"template": "local", "colour": "red"}, "Unknown option(s) 'colour'"),
    ({"template": "course-a-box", "cpu": 4}, "cpu 4 is outside 0.5..2 allowed by template 'course-a-box'."),
    ({"template": "course-a-box", "memory_mb": 100}, "memory_mb 100 is outside 256..2048"),
    ({"template": "course-a-box", "memory_mb": 300.5}, "memory_mb must be a whole number"),
    ({"template": "course-a-box", "cpu": True}, "cpu must be a number"),
    ({"template": "course-a-box", "cpu": "lots"}, "cpu must be a number, not 'lots'"),
    ({"template": "course-a-box", "provider": "aws"}, "does not run on provider 'aws'"),
    ({"template": "local", "cpu": 1}, "Template 'local' has no cpu choice."),
    ({"template": "local", "lifetime_minutes": 121}, "lifetime_minutes 121 is outside 15..120 allowed by template 'local'."),
    ({"template": "local", "lifetime_minutes": 14.5}, "lifetime_minutes 14.5 is outside 15..120"),
    ({"template": "local", "lifetime_minutes": 0}, "lifetime_minutes 0 is outside 15..120"),
    ({"template": "course-a-box", "lifetime_minutes": 5}, "has no session length choice"),
    ({"template": ["local"]}, "template must be a template name"),
    # numbers the server cannot compare or print are refused, never an error
    ({"template": "course-a-box", "memory_mb": int("9" * 400)}, "memory_mb must be a number"),
    ({"template": "course-a-box", "memory_mb": -int("9" * 400)}, "memory_mb must be a number"),
    ({"template": "course-a-box", "cpu": 2**53 + 1}, "cpu must be a number"),
    ({"template": "course-a-box", "cpu": float("nan")}, "cpu must be a number"),
    ({"template": "course-a-box", "cpu": float("inf")}, "cpu must be a number"),
    ({"template": "course-a-box", "cpu": "1e400"}, "cpu must be a number"),
    ({"template": "course-a-box", "cpu": "NaN"}, "cpu must be a number"),
    ({"template": "course-a-box", "memory_mb": "9" * 400}, "memory_mb must be a number of at most 32 characters"),
    ({"template": "course-a-box", "memory_mb": False}, "memory_mb must be a number"),
    ({"template": "course-a-box", "cpu": {"n": 1}}, "cpu must be a number"),
    ({"template": "course-a-box", "cpu": [1, 2]}, "cpu must be a number"),
    ({"template": "course-a-box", "cpu": None}, None),  # null is "not given": the default
    ({"template": {"name": "local"}}, "template must be a template name"),
    ({"template": "course-a-box", "provider": ["docker"]}, "does not run on provider ['docker']"),
    ({"template": "x" * 10_000}, "There is no template named 'xxxx"),
])
def test_refusals(catalogue, options, message):
    if message is None:
        choose(catalogue, options)
        return
    text = refused(catalogue, options)
    assert message in text
    assert len(text) < 300  # a user's huge value is not quoted back whole


@pytest.mark.parametrize("user_options", [["template"], "local", 1])
def test_user_options_that_are_not_an_object(catalogue, user_options):
    assert "user_options must be an object" in refused(catalogue, user_options)


def test_many_unknown_keys_are_named_briefly(catalogue):
    text = refused(catalogue, {f"k{i}": i for i in range(1000)})
    assert text.startswith("Unknown option(s) 'k0', 'k1', ") and ", ..." in text and len(text) < 300


def test_unavailable_template(catalogue):
    msg = refused(catalogue, {"template": "course-a-box"}, unavailable={"course-a-box": "no engine"})
    assert msg == "Template 'course-a-box' is not available right now: no engine"
    # the default skips it
    assert choose(catalogue, {}, unavailable={"local": "x"}).template.name == "course-a-box"


def test_admin_may_use_everything_enabled(catalogue):
    assert choose(catalogue, {"template": "course-b-box"}, groups=(), admin=True).template.name == "course-b-box"
    assert "disabled" in refused(catalogue, {"template": "off"}, admin=True)


def test_no_template_at_all(catalogue):
    msg = refused(catalogue, {}, groups=(), unavailable={"local": "x"})
    assert "no template you may use" in msg


def test_form_shows_only_usable_templates_escaped_and_preselects(catalogue):
    usable = catalogue.usable_by("ann", ["course-a"], False)
    html = render_form(usable, last={"template": "course-a-box", "provider": "other", "cpu": 2})
    assert 'value="course-a-box" checked' in html
    assert "course-b-box" not in html and 'value="off"' not in html
    assert "Course A &lt;box&gt;" in html and "<box>" not in html
    assert 'name="course-a-box.cpu" value="2"' in html
    assert 'name="course-a-box.memory_mb" value="1024"' in html
    assert 'name="local.lifetime_minutes" value="60"' in html
    assert '<option value="other" selected>' in html
    assert '<option value="container" selected>' in html  # the last template's resource type


def test_form_preselects_nothing_for_a_choice_no_longer_usable(catalogue):
    usable = catalogue.usable_by("ann", ["course-a"], False)
    html = render_form(usable, last={"template": "course-b-box", "provider": "docker"})
    assert 'value="local" checked' in html
    assert " selected>" not in html  # provider and resource type: "Any"


@pytest.mark.parametrize("last", [
    {"template": {"x": 1}, "provider": ["docker"], "cpu": {"n": 1}},
    {"template": "course-a-box", "cpu": int("9" * 400), "memory_mb": float("nan"), "gpus": True},
    {"template": "course-a-box", "cpu": "2", "lifetime_minutes": [60]},
    ["course-a-box"],
])
def test_form_ignores_stored_options_it_cannot_use(catalogue, last):
    """The hub's REST API lets a user overwrite a stopped server's stored options with any
    object; the form then shows the defaults where they make no sense."""
    usable = catalogue.usable_by("ann", ["course-a"], False)
    html = render_form(usable, last=last)
    assert 'name="course-a-box.cpu" value="1"' in html
    assert 'name="course-a-box.memory_mb" value="1024"' in html


def test_form_bounds_are_the_bounds_the_server_checks(catalogue):
    """Every number input's min/max: values at them are accepted, values just outside refused."""
    import re

    usable = catalogue.usable_by("ann", ["course-a"], False)
    html = render_form(usable)
    inputs = re.findall(r'name="([^".]+)\.(\w+)" value="[^"]*" min="([^"]+)" max="([^"]+)"', html)
    assert {(t, k) for t, k, _, _ in inputs} == {
        ("course-a-box", "cpu"), ("course-a-box", "memory_mb"), ("local", "lifetime_minutes")}
    for template, key, lo, hi in inputs:
        for value in (lo, hi):
            c = choose(catalogue, {"template": template, key: value})
            assert (c.lifetime_minutes if key == "lifetime_minutes" else c.resources[key]) == float(value)
        delta = 1 if key in INTEGER_KEYS else 0.25
        for value in (float(lo) - delta, float(hi) + delta):
            assert f"{key} {value:g} is outside {lo}..{hi}" in refused(catalogue, {"template": template, key: value})


@pytest.mark.parametrize("spec, bounds", [
    ({"default": 60}, (60, 1, 60)),
    ({"default": 60, "max": 90}, (60, 1, 90)),
    ({"default": 0.5, "max": 2}, (0.5, 0.5, 2)),  # a default under a minute is its own minimum
    ({"default": 30, "min": 10, "max": 90}, (30, 10, 90)),
])
def test_lifetime_bounds(spec, bounds):
    t = Template({"name": "t", "lifetime_minutes": spec}, "f.json")
    assert (t.lifetime.default, t.lifetime.min, t.lifetime.max) == bounds


def test_form_marks_unavailable_and_shows_admin_error(catalogue):
    usable = catalogue.usable_by("ann", ["course-a"], False)
    html = render_form(usable, unavailable={"course-a-box": "engine <down>"}, admin_error="f.json: at /x: bad")
    assert 'value="course-a-box" disabled' in html
    assert "Not available now: engine &lt;down&gt;" in html
    assert 'value="local" checked' in html
    assert 'id="ms-catalogue-error"' in html and "f.json: at /x: bad" in html


def test_options_from_form_takes_the_chosen_templates_fields(catalogue):
    form = {"template": ["course-a-box"], "provider": [""], "resource_type": ["container"],
            "course-a-box.cpu": ["1.5"], "course-a-box.memory_mb": ["512"], "local.lifetime_minutes": ["30"]}
    options = options_from_form(form)
    assert options == {"template": "course-a-box", "cpu": "1.5", "memory_mb": "512"}
    assert choose(catalogue, options).resources == {"cpu": 1.5, "memory_mb": 512}
