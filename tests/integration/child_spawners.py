"""Small real child spawners for MultipleSpawner's hub tests; the hub imports them by dotted path.

A template names them as ``spawner.class: tests.integration.child_spawners.<Name>``; the hub
must allow them (:data:`ALLOWED_SPAWNER_CLASSES`) and be started with :data:`HUB_ENV` so that ``tests`` is importable in the hub process (the
catalogue checks that the class imports, so a missing path is a catalogue error, not a pass).
"""

import asyncio
import os
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner, Spawner
from traitlets import Float, Unicode

from multiplespawner.catalogue import DEFAULT_SPAWNER_CLASSES

REPO = Path(__file__).resolve().parents[2]
#: Environment for ``hub_factory(..., env=HUB_ENV)``.
HUB_ENV = {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
PREFIX = "tests.integration.child_spawners."
#: ``c.MultipleSpawner.allowed_spawner_classes`` for hubs whose templates name these classes
ALLOWED_SPAWNER_CLASSES = [*DEFAULT_SPAWNER_CLASSES,
                           *(PREFIX + name for name in ("ProgressSpawner", "MarkerSpawner", "StuckSpawner"))]


class ProgressSpawner(LocalProcessSpawner):
    """LocalProcessSpawner with progress events of its own.

    ``start`` waits (at most ``progress_wait`` seconds) until somebody has read the first of
    them, so a test reading the hub's progress stream cannot miss them by connecting late;
    if nobody forwards them, the spawn takes ``progress_wait`` longer and says so in the log.
    """

    progress_wait = Float(30, help="Seconds start() waits for the progress events to be read.").tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._progress_read = asyncio.Event()

    async def progress(self):
        # counted from its own 0, below MultipleSpawner's last phase (as CloudSSHSpawner's are)
        yield {"progress": 10, "message": "ProgressSpawner: preparing the process"}
        self._progress_read.set()
        yield {"progress": 20, "message": "ProgressSpawner: launching"}

    async def start(self):
        try:
            await asyncio.wait_for(self._progress_read.wait(), timeout=self.progress_wait)
        except asyncio.TimeoutError:
            self.log.warning("ProgressSpawner: nobody read the progress events of %s", self._log_name)
        return await super().start()


class MarkerSpawner(LocalProcessSpawner):
    """LocalProcessSpawner whose ``delete_forever`` appends ``<user>/<server>`` to ``marker_path``."""

    marker_path = Unicode(help="File delete_forever appends to.").tag(config=True)

    async def delete_forever(self):
        with open(self.marker_path, "a") as f:
            f.write(f"{self.user.name}/{self.name}\n")


class StuckSpawner(Spawner):
    """A spawner whose ``start`` never returns and which never runs anything.

    ``poll`` reports "not running", ``stop`` has nothing to do: standing in for a child that
    hangs, and for a class that would forget a running server if the hub rebuilt it.
    """

    async def start(self):
        await asyncio.sleep(3600)

    async def poll(self):
        return 0

    async def stop(self, now=False):
        pass
