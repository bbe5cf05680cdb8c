"""The spawner classes templates name: resolved by the catalogue, used by the spawner.

A template's ``spawner.class`` is a dotted path (``dockerspawner.DockerSpawner``) or the name of
a ``jupyterhub.spawners`` entry point (``docker``). This module belongs to the catalogue part:
it imports nothing else of the suite, so the template editor can check a catalogue without
loading the spawner, and the spawner can import the catalogue without a circle.
"""

from __future__ import annotations

import importlib.util
import threading
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from traitlets.utils.importstring import import_item

if TYPE_CHECKING:  # imported where a class is checked: loading JupyterHub's spawner takes a second
    from jupyterhub.spawner import Spawner


class TemplateError(Exception):
    """A template that passed the schema cannot be used (e.g. its class does not import)."""


_SPAWNER_CLASSES: dict[str, type[Spawner]] = {}
_SPAWNER_CLASSES_LOCK = threading.Lock()


def spawner_class_for(name: str) -> type[Spawner]:
    """Resolve a template's ``spawner.class``: a dotted path or a ``jupyterhub.spawners`` entry point.

    Classes that resolved are cached for the process, so spawns and state loads cost a dict
    lookup. The first call for a name imports its module (blocking: dockerspawner pulls in
    docker-py); the catalogue reload makes that call in a worker thread before any spawn can
    name the template. Failures are not cached: installing the missing package and touching
    the catalogue fixes a template. Raises :class:`TemplateError` saying why; a class that
    itself builds children from templates (``builds_children_from_templates``, e.g.
    MultipleSpawner) is refused.
    """
    with _SPAWNER_CLASSES_LOCK:
        cls = _SPAWNER_CLASSES.get(name)
        if cls is None:
            cls = _SPAWNER_CLASSES[name] = _resolve_spawner_class(name)
        return cls


def _resolve_spawner_class(name: str) -> type[Spawner]:
    from jupyterhub.spawner import Spawner

    try:
        if "." in name:
            cls = import_item(name)
        else:
            cls = _entry_point(name).load()
    except TemplateError:
        raise
    except Exception as e:  # a missing module, or one that fails to import
        raise TemplateError(f"cannot import spawner class {name!r}: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, Spawner)):
        raise TemplateError(f"{name!r} is not a JupyterHub Spawner class")
    if getattr(cls, "builds_children_from_templates", False):
        raise TemplateError(f"{name!r} is a MultipleSpawner; templates must name a concrete spawner")
    return cls


def _entry_point(name: str):
    found = entry_points(group="jupyterhub.spawners", name=name)
    if not found:
        raise TemplateError(f"no spawner is registered under the name {name!r}")
    return next(iter(found))


def locate_spawner_class(name: str) -> None:
    """Check that a template's ``spawner.class`` can be found, without importing its module.

    For processes that check catalogues but never spawn (the template editor): a dotted path's
    module must be installed (only its parent packages are imported, not the module itself),
    an entry point name must be registered. Whether the class is a Spawner is left to the
    hub's own load (:func:`spawner_class_for`). Raises :class:`TemplateError` saying why.
    """
    if "." not in name:
        _entry_point(name)
        return
    module = name.rsplit(".", 1)[0]
    try:
        spec = importlib.util.find_spec(module)
    except Exception as e:  # a parent package that is missing or fails to import
        raise TemplateError(f"cannot import spawner class {name!r}: {e}") from e
    if spec is None:
        raise TemplateError(f"cannot import spawner class {name!r}: No module named {module!r}")
