"""Provider names, as deployments write them, to provider classes.

Built-in providers are listed in :data:`BUILTIN`; other packages add theirs with an entry point
in the ``multiplespawner.providers`` group (``name = module:Class``). Classes are imported only
when asked for, so a missing optional dependency (libvirt-python, apache-libcloud) matters only
to deployments that use that provider.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points

from .base import Provider

ENTRY_POINT_GROUP = "multiplespawner.providers"

BUILTIN = {
    "docker": "multiplespawner.providers.docker:DockerProvider",
    "libvirt": "multiplespawner.providers.libvirt:LibvirtProvider",
    "libcloud": "multiplespawner.providers.libcloud:LibcloudProvider",
}


def available() -> list[str]:
    """Every provider name this installation knows (built-in and from entry points)."""
    return sorted({*BUILTIN, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})


def provider_class(name: str) -> type[Provider]:
    """The provider class registered as ``name``.

    Raises ``LookupError`` for an unknown name and ``ImportError`` (naming the missing package)
    when the provider's client library is not installed.
    """
    if name in BUILTIN:
        module, _, attr = BUILTIN[name].partition(":")
        cls = getattr(import_module(module), attr)
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not found:
            raise LookupError(f"unknown machine provider {name!r}; known: {', '.join(available())}")
        cls = found[0].load()
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise TypeError(f"provider {name!r} resolves to {cls!r}, which is not a Provider subclass")
    return cls


def make_provider(name: str, **options) -> Provider:
    """An instance of the provider registered as ``name``, built with ``options``."""
    return provider_class(name)(**options)
