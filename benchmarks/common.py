"""Helpers shared by the benchmarks: statistics, event-loop stall measurement, plotting."""

import asyncio
import statistics
import time

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
