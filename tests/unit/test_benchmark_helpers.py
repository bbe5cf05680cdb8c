"""The benchmarks' measuring helpers: per-process CPU seconds and the hub sampler's summary."""

import os
import subprocess
import sys

import pytest

from benchmarks import hub_sampler
from benchmarks.common import process_cpu_seconds


def test_process_cpu_seconds_counts_own_work_and_reaped_children():
    own_before, reaped_before = process_cpu_seconds(os.getpid())
    subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True)
    sum(i * i for i in range(2_000_000))
    own, reaped = process_cpu_seconds(os.getpid())
    assert reaped - reaped_before > 0.05  # the child's loop, added when it was waited for
    assert own - own_before > 0.05


def test_process_cpu_seconds_of_a_process_that_has_ended_is_zero():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_cpu_seconds(child.pid) == (0.0, 0.0)


def test_sampler_summary_shares_idle_tasks_and_innermost_frames(tmp_path):
    loop = "jupyterhub:<module>;base_events.py:run_forever;base_events.py:_run_once"
    stacks = tmp_path / "stacks.txt"
    stacks.write_text(
        f"{loop};selectors.py:select 5\n"
        f"{loop};events.py:_run;base.py:stop;user.py:stop;default.py:do_execute 3\n"
        f"{loop};events.py:_run;web.py:_execute;users.py:delete;base.py:find_user 2\n")
    summary = hub_sampler.summary(stacks)
    assert summary["samples"] == 10 and summary["idle_share"] == 0.5
    assert summary["by_task"] == [[0.3, "base.py:stop > user.py:stop"], [0.2, "web.py:_execute > users.py:delete"]]
    assert summary["innermost"][0] == [0.5, "selectors.py:select"]


def test_sampler_summary_refuses_an_empty_profile(tmp_path):
    empty = tmp_path / "stacks.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="no samples"):
        hub_sampler.summary(empty)


def test_sampler_writes_the_main_threads_stacks_while_the_flag_exists(tmp_path):
    flag, out = tmp_path / "on", tmp_path / "stacks.txt"
    code = (f"import sys, time, os; sys.path.insert(0, {os.getcwd()!r}); from benchmarks import hub_sampler\n"
            f"hub_sampler.start({str(flag)!r}, {str(out)!r})\n"
            f"open({str(flag)!r}, 'w').close()\n"
            "def busy_work():\n    end = time.monotonic() + 0.5\n    while time.monotonic() < end: pass\n"
            f"busy_work(); os.unlink({str(flag)!r})\n"
            f"while not os.path.exists({str(out)!r}): time.sleep(0.01)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert "busy_work" in out.read_text()
