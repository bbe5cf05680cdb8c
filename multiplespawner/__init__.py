"""A wrapping spawner: users pick a provider and a resource template at spawn time.

Submodules load on first use (PEP 562): ``from multiplespawner import MultipleSpawner`` and the
``multiple`` entry point import the spawner; ``import multiplespawner.catalogue`` (e.g. in the
template editor's process) does not.
"""

__all__ = ["MultipleSpawner"]


def __getattr__(name: str):
    if name == "MultipleSpawner":
        from .spawner import MultipleSpawner

        return MultipleSpawner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
