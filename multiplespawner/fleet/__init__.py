"""Fleet operations for hub operators and course managers: list and stop servers in bulk.

A JupyterHub service of its own (:mod:`.app`), apart from the template editor: it acts on
servers through the hub's REST API with its own narrow scopes, and the editor stays free of
anything that touches servers. ``multiplespawner-servers`` (:mod:`.cli`) is its command line.
"""
