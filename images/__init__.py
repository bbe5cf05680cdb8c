"""Container images for the suite's container tests and container-as-a-machine provider.

Built locally with no image registry: a Debian base made by ``debootstrap`` and
``docker import``, then layers from ``recipes/<name>/`` with wheels downloaded on the host and
installed offline. Tags are content hashes, so an unchanged recipe is never rebuilt. See
``docs/images.md`` and ``python -m images --help``.
"""
