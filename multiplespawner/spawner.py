"""MultipleSpawner (skeleton; grows with the catalogue and delegation work)."""

from jupyterhub.spawner import Spawner


class MultipleSpawner(Spawner):
    """Spawn on the resource a user picks from the template catalogue."""
