"""A sampling profile of the hub's event-loop thread, for benchmarks that need to show where the
hub's time goes (no external profiler is needed).

In the hub's config (``hub_config``): a daemon thread that, while a flag file exists, reads the
main thread's stack every ``INTERVAL`` seconds and counts each stack; when the flag file is
removed it writes the counts, one ``frame;frame;... count`` line per stack (the "collapsed"
format flame-graph tools read), most frequent first. :func:`summary` turns that file into the
shares a benchmark reports.

What the samples mean: the sampling thread needs the GIL to read a stack, so it samples when the
main thread waits (``select``: the loop is idle), is inside a call that releases the GIL
(SQLite, sockets) or reaches the interpreter's switch interval (5 ms) in Python code. Shares are
of wall-clock samples, not exact CPU time; a function missing from them used less than a
sample's worth.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from pathlib import Path

INTERVAL = 0.002


def _sample(main_id: int, flag: str, out: str) -> None:
    counts: collections.Counter = collections.Counter()
    while True:
        if os.path.exists(flag):
            frame = sys._current_frames().get(main_id)
            stack = []
            while frame is not None:
                stack.append(f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_code.co_name}")
                frame = frame.f_back
            counts[";".join(reversed(stack))] += 1
            time.sleep(INTERVAL)
        else:
            if counts:
                Path(out).write_text("".join(f"{stack} {n}\n" for stack, n in counts.most_common()))
                counts.clear()
            time.sleep(0.05)


def start(flag: str, out: str) -> None:
    """Sample the calling (main) thread while ``flag`` exists; write ``out`` when it goes."""
    threading.Thread(target=_sample, args=(threading.main_thread().ident, flag, out), daemon=True,
                     name="hub-sampler").start()


def hub_config(repo: str, flag: Path, out: Path) -> str:
    """Hub config text that starts the sampler (``repo``: the checkout)."""
    return (f"\nimport sys\nsys.path.insert(0, {repo!r})\nfrom benchmarks import hub_sampler\n"
            f"hub_sampler.start({str(flag)!r}, {str(out)!r})\n")


def summary(path: Path, top: int = 10) -> dict:
    """From a collapsed-stack file: the number of samples; the share in which the loop was idle
    (its innermost frame is the selector's wait); ``by_task``, the shares of what the loop was
    running, named by the first two frames under the loop's callback runner (e.g.
    ``base.py:stop > user.py:stop``); ``innermost``, the shares of the innermost frames. Each
    list holds the ``top`` entries as ``[share, name]``."""
    tasks: collections.Counter = collections.Counter()
    innermost: collections.Counter = collections.Counter()
    total = idle = 0
    for line in path.read_text().splitlines():
        stack, n = line.rsplit(" ", 1)
        frames, count = stack.split(";"), int(n)
        total += count
        innermost[frames[-1]] += count
        if frames[-1] == "selectors.py:select":
            idle += count
        elif "events.py:_run" in frames:
            at = frames.index("events.py:_run")
            tasks[" > ".join(frames[at + 1:at + 3])] += count
    if not total:
        raise ValueError(f"{path}: no samples")

    def shares(counter):
        return [[round(n / total, 3), name] for name, n in counter.most_common(top)]

    return {"samples": total, "idle_share": round(idle / total, 3), "by_task": shares(tasks),
            "innermost": shares(innermost)}
