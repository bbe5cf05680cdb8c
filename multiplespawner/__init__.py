"""A wrapping spawner: users pick a provider and a resource template at spawn time."""

from .spawner import MultipleSpawner

__all__ = ["MultipleSpawner"]
