"""Start a notebook on a remote machine over SSH, tunnelled back to the hub both ways."""

from .spawner import CloudSSHSpawner

__all__ = ["CloudSSHSpawner"]
