"""The original MultipleSpawner's configuration files (the thesis's Listings 11 and 12, copied
verbatim into tests/unit/thesis/) load as printed: each legacy spelling is translated to the
modern one before validation, with a notice naming what to write instead; modern documents
pass through untouched."""

import copy
import json
import logging
from pathlib import Path

import pytest

from multiplespawner.catalogue import CatalogueError, load_catalogue
from multiplespawner.legacy_format import translate

THESIS = Path(__file__).parent / "thesis"
DEPLOYMENTS = THESIS / "thesis-listing11-deployments.json"
TEMPLATES = THESIS / "thesis-listing12-templates.json"


def notices(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "multiplespawner.legacy_format"]


def test_thesis_listings_load_verbatim(caplog):
    caplog.set_level(logging.WARNING, "multiplespawner.legacy_format")
    catalogue = load_catalogue([DEPLOYMENTS, TEMPLATES])

    assert catalogue.deployments["container"] == [
        {"name": "python_notebook", "provider": "docker", "image": "nielsbohr/python-notebook"}]
    assert catalogue.deployments["virtual_machine"] == [
        {"name": "oracle_linux_7_8", "provider": "oci", "image": "Oracle Linux 7.8"}]
    (template,) = catalogue.templates.values()
    assert template.name == "VirtualMachine-Spawner"
    assert template.display_name == "VirtualMachine Spawner"
    assert template.spec["spawner"] == {"class": "cloudsshspawner.CloudSSHSpawner", "kwargs": {}}
    # corc's configurer: the shipped playbook prepares environment and user; nothing of the
    # listing's host_variables is still meaningful (connection settings, users, hub address)
    assert template.spec["configurer"] == {"class": "ansible", "options": {}}
    assert template.spec["authenticator"] == {"class": "certificate"}

    messages = notices(caplog)
    expected = [
        'thesis-listing11-deployments.json: at /container/0: original MultipleSpawner format: '
        'a container deployment without "provider": write "provider": "docker"',
        "at /0/name: original MultipleSpawner format: 'VirtualMachine Spawner' is not an identifier: "
        'write "name": "VirtualMachine-Spawner", "display_name": "VirtualMachine Spawner"',
        'at /0/spawner/class: original MultipleSpawner format: write "cloudsshspawner.CloudSSHSpawner"',
        'at /0/configurer/class: original MultipleSpawner format: corc.configurer.AnsibleConfigurer: write "ansible"',
        "at /0/configurer/options/host_variables/ansible_user: original MultipleSpawner format: "
        "dropped: the admin login is c.MachineOrchestrator.admin_user",
        "at /0/configurer/options/host_variables/users: original MultipleSpawner format: dropped: "
        "the notebook user and its per-server key come from the server's credentials",
        "at /0/configurer/options/host_settings: original MultipleSpawner format: dropped:",
        'at /0/configurer/options/apply_kwargs: original MultipleSpawner format: dropped: the shipped '
        'notebook-machine.yml prepares the environment and the notebook user; to run your own, write '
        '"playbook_dir" and "playbook"',
        'at /0/authenticator/class: original MultipleSpawner format: corc.authenticator.SSHAuthenticator: '
        'write "class": "certificate"',
        "at /0/authenticator/kwargs/key_name: original MultipleSpawner format: dropped: every server gets a new key",
        "at /0/authenticator/kwargs/load_existing: original MultipleSpawner format: dropped:",
    ]
    for text in expected:
        assert any(text in m for m in messages), (text, messages)


def test_the_listings_combined_in_one_file_translate_alike(tmp_path, caplog):
    combined = tmp_path / "catalogue.json"
    combined.write_text(json.dumps({
        "deployments": json.loads(DEPLOYMENTS.read_text()),
        "templates": json.loads(TEMPLATES.read_text()),
    }))
    caplog.set_level(logging.WARNING, "multiplespawner.legacy_format")
    catalogue = load_catalogue([combined])
    assert catalogue.templates["VirtualMachine-Spawner"].spec["configurer"]["class"] == "ansible"
    assert any("at /deployments/container/0:" in m for m in notices(caplog))
    assert any("at /templates/0/name:" in m for m in notices(caplog))


def test_modern_documents_pass_through_untouched(caplog):
    caplog.set_level(logging.WARNING, "multiplespawner.legacy_format")
    modern = {
        "deployments": {"container": [{"name": "here", "provider": "docker", "image": "x"}]},
        "templates": [{"name": "box", "display_name": "A box", "resource_type": "container",
                       "providers": ["docker"], "spawner": {"class": "docker", "kwargs": {}}}],
    }
    assert translate(modern, "c.json") is modern
    assert translate(modern["templates"], "t.json") is modern["templates"]
    assert translate(modern["deployments"], "d.json") is modern["deployments"]
    assert notices(caplog) == []


def test_the_input_is_not_modified():
    document = json.loads(TEMPLATES.read_text())
    before = copy.deepcopy(document)
    translated = translate(document, "t.json")
    assert document == before and translated != before


@pytest.mark.parametrize(
    "options, expected",
    [
        # one playbook: its directory and file
        ({"apply_kwargs": {"playbook_paths": ["/srv/playbooks/site.yml"]}},
         {"playbook_dir": "/srv/playbooks", "playbook": "site.yml"}),
        # site variables stay, what the suite supplies goes
        ({"host_variables": {"ansible_user": "opc", "course": "ml", "users": []}},
         {"variables": {"course": "ml"}}),
        # AnsibleConfigurer's own options are kept as they are
        ({"wheel_dir": "/srv/wheels", "host_settings": {"port": "22"}}, {"wheel_dir": "/srv/wheels"}),
    ],
)
def test_configurer_options(options, expected):
    (template,) = translate([{"name": "vm", "resource_type": "virtual_machine", "providers": ["oci"],
                              "spawner": {"class": "cloudsshspawner.CloudSSHSpawner"},
                              "configurer": {"class": "corc.configurer.AnsibleConfigurer", "options": options}}],
                            "t.json")
    assert template["configurer"] == {"class": "ansible", "options": expected}


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"create_certificate": "True"}, {"class": "certificate"}),
        ({"create_certificate": "False", "key_name": "k"}, {"class": "key"}),
        ({}, {"class": "key"}),
    ],
)
def test_authenticator(kwargs, expected):
    (template,) = translate([{"name": "vm", "authenticator": {"class": "corc.authenticator.SSHAuthenticator",
                                                              "kwargs": kwargs}}], "t.json")
    assert template["authenticator"] == expected


def test_a_name_that_stays_unusable_is_still_a_catalogue_error(tmp_path):
    """Two legacy names that become the same identifier: the catalogue reports the duplicate."""
    templates = json.loads(TEMPLATES.read_text())
    templates.append({**templates[0], "name": "VirtualMachine  Spawner"})
    path = tmp_path / "templates.json"
    path.write_text(json.dumps(templates))
    with pytest.raises(CatalogueError, match="VirtualMachine-Spawner"):
        load_catalogue([DEPLOYMENTS, path])
