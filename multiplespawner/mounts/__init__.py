"""Storage mounts for notebook servers.

``sshfs``: mount an SFTP source with sshfs on the hub host, the private key held only by a
private ``ssh-agent``; unmount, health check and the listing a reaper needs
(see docs/mounts.md). Standard library only; nothing here is wired into the spawner yet.
"""
