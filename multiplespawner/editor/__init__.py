"""Template editing for course admins: a JupyterHub service, its REST API and a CLI.

The catalogue files stay the source of truth; :mod:`.store` changes them safely and
MultipleSpawner's hot reload picks every change up at once.
"""
