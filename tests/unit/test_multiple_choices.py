"""Validation shared by the spawn form and REST user_options; the form's content."""

import json

import pytest
from tornado.web import HTTPError

from multiplespawner.catalogue import load_catalogue
from multiplespawner.choices import resolve_choice
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
         "lifetime_minutes": {"default": 60, "max": 120},
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
    assert info.value.status_code == 400
    return info.value.log_message


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
    ({"template": "local", "lifetime_minutes": 121}, "lifetime_minutes 121 must be more than 0 and at most 120"),
    ({"template": "local", "lifetime_minutes": 0}, "must be more than 0"),
    ({"template": "course-a-box", "lifetime_minutes": 5}, "has no session length choice"),
    ({"template": ["local"]}, "template must be a template name"),
])
def test_refusals(catalogue, options, message):
    assert message in refused(catalogue, options)


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
