"""The fault soak benchmark's quick schedule runs to its end and writes its outputs.

Not a measurement (see docs/reliability.md for the soak's figures): this checks that
``python -m benchmarks faults_soak --quick`` (4 users, about a minute, a fault every 15 s)
completes, classifies every spawn, checks for leaks and writes its JSON and PNG.
"""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_faults_soak_quick_completes_and_writes_outputs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "faults_soak", "--quick", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((tmp_path / "faults_soak.json").read_text())
    assert (tmp_path / "faults_soak.png").stat().st_size > 0
    assert data["faults_injected"], data
    assert data["spawns_attempted"] == sum(
        data[f"spawns_{k}"] for k in ("succeeded", "failed_named", "failed_other", "skipped"))
    assert data["spawns_succeeded"] > 0
    assert set(data["leaks"]) == {"servers", "singleuser_processes", "proxy_routes", "duplicate_uids"}
    assert data["hub_stall_ms"]["faults_max_ms"] > 0  # the ticker inside the hub ran
