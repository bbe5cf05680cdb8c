"""Inside the hub under test: how late its event loop runs, and what holds it when it is late.

Loaded by a benchmark's hub config (:func:`hub_config`), which routes ``/hub/loop-probe`` to
:class:`LoopProbeHandler`. ``GET /hub/loop-probe?reset=1`` starts a fresh measurement;
``GET /hub/loop-probe`` answers the report as JSON (see :meth:`LoopProbe.report`).

Two parts, both in the hub's process:

* a ticker on the hub's event loop that sleeps ``interval`` and records how much later than
  that it woke (the loop's lag: a callback holding the loop, or the process not getting a CPU);
* a watchdog thread that, whenever the ticker is more than ``threshold`` late, samples the loop
  thread's stack every ``interval``. A sample whose innermost frame is the selector's wait means
  the loop was idle and the process was waiting for a CPU (the machine is busy); any other stack
  is code holding the loop, counted by its innermost frames: a sampling profile of the stalls.

The route answers without authentication: it exists only in the benchmark's hub, on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import traceback
from collections import Counter

from tornado import web

#: the innermost frame of a loop thread that waits for events (idle, not holding the loop)
SELECTOR_WAIT = ("selectors.py", "select")
STACK_DEPTH = 8


class LoopProbe:
    """The ticker and the watchdog (see the module docstring); one per hub process."""

    def __init__(self, interval: float = 0.01, threshold: float = 0.05):
        self.interval = interval
        self.threshold = threshold
        self._task: asyncio.Task | None = None
        self._stop = threading.Event()
        self._reset_figures()

    def _reset_figures(self) -> None:
        self.max_lag_ms = 0.0
        self.ticks = 0
        self.late_ticks = 0  # ticks later than the threshold
        self.stalls: list[tuple[float, float]] = []  # (seconds since start, lag ms) over threshold
        self.stacks: Counter = Counter()
        self.starved_samples = 0
        self.started = time.monotonic()
        self.last_tick = time.perf_counter()

    def start(self) -> None:
        """(Re)start measuring on the running loop."""
        self.stop()
        self._reset_figures()
        self._stop = threading.Event()
        self._task = asyncio.get_running_loop().create_task(self._tick())
        threading.Thread(target=self._watch, args=(threading.get_ident(), self._stop),
                         name="loop-probe", daemon=True).start()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._stop.set()

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            now = time.perf_counter()
            self.last_tick = now
            lag_ms = (now - before - self.interval) * 1000
            self.ticks += 1
            self.max_lag_ms = max(self.max_lag_ms, lag_ms)
            if lag_ms > self.threshold * 1000:
                self.late_ticks += 1
                if len(self.stalls) < 10000:
                    self.stalls.append((round(time.monotonic() - self.started, 3), round(lag_ms, 1)))

    def _watch(self, loop_thread: int, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            if time.perf_counter() - self.last_tick < self.threshold + self.interval:
                continue
            frame = sys._current_frames().get(loop_thread)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)
            innermost = stack[-1]
            if (os.path.basename(innermost.filename), innermost.name) == SELECTOR_WAIT:
                self.starved_samples += 1
            else:
                self.stacks[" <- ".join(
                    f"{_short(f.filename)}:{f.lineno} {f.name}" for f in reversed(stack[-STACK_DEPTH:])
                )] += 1

    def report(self) -> dict:
        """``max_lag_ms``; ``ticks`` and ``late_ticks`` (over ``threshold_ms``); ``stalls``
        [(seconds since reset, lag ms)]; ``samples_waiting_for_cpu`` and ``holding_stacks``
        (innermost frame first, with sample counts, most frequent first): one sample per
        ``interval`` of a stall."""
        return {
            "max_lag_ms": round(self.max_lag_ms, 1),
            "threshold_ms": self.threshold * 1000,
            "interval_ms": self.interval * 1000,
            "ticks": self.ticks,
            "late_ticks": self.late_ticks,
            "stalls": self.stalls,
            "samples_waiting_for_cpu": self.starved_samples,
            "holding_stacks": [{"samples": n, "stack": s} for s, n in self.stacks.most_common(15)],
        }


def _short(filename: str) -> str:
    """A path from its package directory on (``jupyterhub/app.py``, ``asyncio/events.py``)."""
    parts = filename.split(os.sep)
    for anchor in ("site-packages", "python3.11", "lib"):
        if anchor in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(anchor):])
    return "/".join(parts[-2:])


PROBE = LoopProbe()


class LoopProbeHandler(web.RequestHandler):
    """``GET``: the report as JSON; ``GET ?reset=1``: start a fresh measurement first."""

    def get(self):
        if self.get_argument("reset", ""):
            PROBE.start()
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(PROBE.report()))


def hub_config(repo: str) -> str:
    """Hub config text that serves the probe at ``/hub/loop-probe`` (``repo``: the checkout)."""
    return f"""
import sys
sys.path.insert(0, {repo!r})
from benchmarks.hub_probe import LoopProbeHandler
c.JupyterHub.extra_handlers = [(r"/loop-probe", LoopProbeHandler)]
"""
