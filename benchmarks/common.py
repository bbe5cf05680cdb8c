"""Helpers shared by the benchmarks: statistics, event-loop stall measurement, plotting."""

import asyncio
import os
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")


def percentile(values, p: float) -> float:
    """The p-th percentile (0-100) of ``values`` by linear interpolation."""
    data = sorted(values)
    if not data:
        raise ValueError("no values")
    k = (len(data) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def process_cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) that process ``pid`` has used itself, and that its children
    used which it has already waited for (``/proc/PID/stat`` utime+stime, cutime+cstime).
    A process that has exited answers (0.0, 0.0)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    # after the command name: field 3 is the state, so utime..cstime (fields 14-17) are [11:15]
    utime, stime, cutime, cstime = (int(v) / tick for v in fields[11:15])
    return utime + stime, cutime + cstime


def summary(values) -> dict:
    """Median, p95, min, max and count of a list of numbers."""
    return {
        "median": statistics.median(values),
        "p95": percentile(values, 95),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


class StallMonitor:
    """Measure the longest time the running event loop failed to wake a 1 ms ticker.

    ``async with StallMonitor() as m: ...`` then ``m.max_stall_ms``. A blocking call on the loop
    shows up as a stall of about its duration.
    """

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.max_stall_ms = 0.0
        self._task = None

    async def _tick(self):
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            late = (time.perf_counter() - before - self.interval) * 1000
            self.max_stall_ms = max(self.max_stall_ms, late)

    async def __aenter__(self):
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc):
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


def new_figure(title: str, ncols: int = 1):
    """A matplotlib figure with ``ncols`` axes and a title."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4.5), squeeze=False)
    fig.suptitle(title)
    return fig, list(axes[0])


def save(fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
