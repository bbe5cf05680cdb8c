"""The course rush benchmark end to end (``--quick --students 8``: 8 students on each hub, kept
small for CI time; the recorded figures come from full runs, see docs/scale.md), and the CPU
weight really applied: every local notebook the suite started runs at nice 19 in an autogroup
at nice 19, every container with ``CpuShares`` 128; plain JupyterHub's children at the defaults.
"""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STUDENTS = 8  # half on the local-process template, half on the container template
HALF = STUDENTS // 2


def test_quick_rush_readies_every_student_and_the_suites_children_run_at_lower_weight(
    docker_engine, notebook_image, tmp_path
):
    out = tmp_path / "results"
    run = subprocess.run([sys.executable, "-m", "benchmarks", "course_rush", "--quick", "--students", str(STUDENTS), "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    result = json.loads((out / "course_rush.json").read_text())
    assert (out / "course_rush.png").read_bytes()[:8] == PNG_MAGIC
    assert result["students"] == STUDENTS
    for kind in ("plain", "suite"):
        figures = result[kind]
        assert figures["failures"] == {}, (kind, figures["failures"], run.stderr[-5000:])
        assert figures["ready"] == STUDENTS and figures["class_ready_s"] > 0
        assert set(figures["by_template_p95_s"]) == {"local", "container"}
        assert figures["hub_api_ms"]["probes"] > 0 and figures["hub_loop"]["ticks"] > 0
        assert len(result["samples"][kind]["ready_after_click_s"]) == STUDENTS
        # both hubs' databases in write-ahead-log mode (multiplespawner.hub_database, the default)
        assert figures["hub_db_journal_mode"] == "wal"
    assert result["suite"]["cpu_weight_seen"] == {
        "local_nice": {"19": HALF}, "local_autogroup_nice": {"19": HALF}, "container_cpu_shares": {"128": HALF}}
    # Docker reports its default weight as 0
    assert result["plain"]["cpu_weight_seen"] == {
        "local_nice": {"0": HALF}, "local_autogroup_nice": {"0": HALF}, "container_cpu_shares": {"0": HALF}}
    assert result["p95_suite_over_plain"] > 0
    assert result["spawn_pacing_per_s"] == 5  # examples/header-nginx/hub-spawn-pacing.conf, both hubs
