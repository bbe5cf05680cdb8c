"""Storage mounts for notebook servers.

``sshfs``: mount an SFTP source with sshfs on the hub host, the private key held only by a
private ``ssh-agent``; unmount, health check and the listing a reaper needs (standard library
only). ``server``: a server's mounts from a template's ``mounts`` and the user's auth_state,
made, undone and recorded for MultipleSpawner (container templates). See docs/mounts.md.
"""
