"""Progress events of one spawn, as a spawner's ``progress()`` hands them to the hub.

JupyterHub reads ``Spawner.progress()`` for the spawn page's bar and messages, possibly after
some events already happened (a reader that connects late) and possibly twice. A spawner
records events with :meth:`ProgressEvents.add` while it starts and serves
:meth:`ProgressEvents.follow` from ``progress()``; a wrapping spawner hands over to its
child's events with :meth:`ProgressEvents.handover`, so the bar never moves backwards.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Callable

#: seconds between checks of ``follow``'s ``until`` while no event arrives
_RECHECK = 1.0


class ProgressEvents:
    """The events of the current spawn: ``{"progress": percent, "message": text}`` dicts."""

    def __init__(self):
        self.events: list[dict] = []
        self.done = False
        self._changed = asyncio.Event()

    def reset(self) -> None:
        """Forget the events of an earlier spawn (call when a new spawn begins)."""
        self.events, self.done = [], False

    def add(self, percent: float, message: str) -> None:
        """Record an event; readers waiting in :meth:`follow` get it at once."""
        self.events.append({"progress": percent, "message": message})
        self._changed.set()

    def finish(self) -> None:
        """No more events will come from this spawner for the current spawn."""
        self.done = True
        self._changed.set()

    async def follow(self, until: Callable[[], bool] = lambda: False) -> AsyncIterator[dict]:
        """Every event of the current spawn from the first, then new ones as they come.

        Ends after :meth:`finish`, or when ``until()`` is true (checked after each event and at
        least every second).
        """
        sent = 0
        while True:
            while sent < len(self.events):
                yield self.events[sent]
                sent += 1
            if self.done or until():
                return
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), _RECHECK)
            except asyncio.TimeoutError:
                pass

    async def handover(self, child_events: AsyncIterator[dict]) -> AsyncIterator[dict]:
        """A child spawner's events, their progress mapped into the range this spawn has left.

        With the last recorded event at ``p`` percent, a child's ``c`` percent becomes
        ``p + (100 - p) * c / 100``; the result never falls below what was shown before, so the
        bar only moves forward across the handover. Events without a numeric progress pass
        unchanged.
        """
        floor = max((e["progress"] for e in self.events), default=0)
        shown = floor
        async for event in child_events:
            percent = event.get("progress")
            if isinstance(percent, (int, float)) and not isinstance(percent, bool):
                shown = max(shown, floor + (100 - floor) * min(max(percent, 0), 100) / 100)
                event = {**event, "progress": round(shown)}
            yield event
