"""Wheel directories follow the target's exact Python (docs/images.md, "Wheels follow the
target's exact Python"): the version table matches Debian's real interpreter, and a wheel
directory recorded for another patch release (or not recorded) is refused with the command to
fix it."""

import pytest

from images.build import DEBIAN_PYTHON, WHEEL_PYTHON_FILE, check_wheel_python, python_version_of
from multiplespawner.configurers.ansible import WHEEL_PYTHON_FILE as CONFIGURER_WHEEL_PYTHON_FILE


def test_debian_python_table_matches_this_debian_machine():
    # the test machines are Debian 12 (bookworm), the images' suite
    assert python_version_of(["/usr/bin/python3"]) == DEBIAN_PYTHON["bookworm"]


def test_builder_and_configurer_read_the_same_file():
    assert WHEEL_PYTHON_FILE == CONFIGURER_WHEEL_PYTHON_FILE


@pytest.mark.parametrize("recorded, shown", [("3.11.7", "3.11.7"), (None, "(not recorded)")])
def test_wheels_for_another_python_are_refused(tmp_path, recorded, shown):
    if recorded:
        (tmp_path / WHEEL_PYTHON_FILE).write_text(recorded + "\n")
    with pytest.raises(RuntimeError) as failure:
        check_wheel_python(tmp_path, "3.11.2")
    assert f"are for Python {shown}, the target has 3.11.2" in str(failure.value)
    assert "--only-binary=:all: --python-version 3.11.2" in str(failure.value)


def test_wheels_for_the_same_python_pass(tmp_path):
    (tmp_path / WHEEL_PYTHON_FILE).write_text("3.11.2\n")
    check_wheel_python(tmp_path, "3.11.2")
