"""The fleet benchmark's quick run completes and writes what docs/fleet.md quotes.

Not a measurement (docs/fleet.md has the figures): ``python -m benchmarks fleet --quick
--hub-sqlite wal --profile-hub`` (10 servers, about 35 s) must stop every server and leave no
process, account each stop's CPU by part, sample the hub's event loop during the bulk stop and
write its JSON and PNG.
"""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PARTS = {"hub", "servers", "fleet", "proxy", "cli", "total"}


def test_fleet_quick_stops_everything_and_accounts_cpu_and_the_hubs_loop(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "fleet", "--quick", "--hub-sqlite", "wal", "--profile-hub",
         "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((tmp_path / "fleet.json").read_text())
    assert (tmp_path / "fleet.png").stat().st_size > 0
    assert data["servers"] == 10 and data["bulk_result_line"] == "7 stopped", data
    assert data["servers_left"] == 0 and data["processes_left"] == 0, data
    for cpu in [*data["single_stop_cpu_s"], data["bulk_stop_cpu_s"]]:
        assert set(cpu) == PARTS, cpu
        # every stopped server's shutdown and the hub's work are counted
        assert cpu["servers"] > 0 and cpu["hub"] > 0, cpu
        assert cpu["total"] == round(sum(v for k, v in cpu.items() if k != "total"), 2), cpu
    assert data["bulk_cpu_floor_s"] == round(data["bulk_stop_cpu_s"]["total"] / data["cores"], 2)
    profile = data["hub_profile"]
    assert profile["samples"] > 20, profile
    assert 0 <= profile["idle_share"] < 1, profile
    # the hub's own stop bookkeeping ran on its loop while the bulk stop ran
    assert any("user.py:stop" in name for _, name in profile["by_task"]), profile
