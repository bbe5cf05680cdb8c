"""The image builder stands on its own: an operator without the test extra can build images.

Tests may import ``images``; ``images`` never imports pytest or ``tests``. Checked in a fresh
interpreter where importing pytest fails, so an import anywhere on the builder's path (the
command line, the engine that starts dockerd, the container and VM builders) shows up.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import runpy, sys
sys.modules["pytest"] = None  # any `import pytest` now raises ImportError
sys.modules["_pytest"] = None
import images.build, images.engine, images.vm.build, images.__main__, images.vm.__main__
assert not [m for m in sys.modules if m == "tests" or m.startswith("tests.")], "tests imported"
sys.argv = ["python -m images", "build", "--help"]
try:
    runpy.run_module("images", run_name="__main__")
except SystemExit as e:
    assert e.code == 0, e.code
print("pytest" in sys.modules and sys.modules["pytest"] is None)
"""


def test_image_builder_imports_and_runs_without_pytest():
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "usage: python -m images build" in result.stdout
    # pytest stayed the blocked placeholder: nothing imported it
    assert result.stdout.strip().splitlines()[-1] == "True"


def test_images_help_runs_without_pytest():
    result = subprocess.run(
        [sys.executable, "-c",
         "import sys, runpy; sys.modules['pytest'] = None; sys.argv = ['images', '--help'];"
         "runpy.run_module('images', run_name='__main__')"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "build" in result.stdout
