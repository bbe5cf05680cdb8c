"""CloudSSHSpawner (skeleton; filled in by the SSH spawner work)."""

from jupyterhub.spawner import Spawner


class CloudSSHSpawner(Spawner):
    """Spawn jupyterhub-singleuser on a remote host over one managed SSH connection."""
