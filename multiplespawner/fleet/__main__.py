"""``python -m multiplespawner.fleet --catalogue-path=DIR``: run the fleet service."""

from .app import main

main()
