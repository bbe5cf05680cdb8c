"""``python -m multiplespawner.editor --catalogue-dir=DIR``: run the template editor service."""

from .app import main

main()
