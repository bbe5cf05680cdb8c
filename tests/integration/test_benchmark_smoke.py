"""Every benchmark's ``--quick`` run completes and writes the result and plot its docs quote.

Not measurements (the figures are in docs/, from full runs): each test runs
``python -m benchmarks NAME --quick --out TMP`` as an operator would, and checks the return
code, the PNG and the JSON's shape and internal consistency (every sample counted, every ratio
the ratio of the figures it names, no failures), never a speed. course_rush, faults_soak and
fleet have their own smoke tests, which check more of what their runs did
(test_course_rush.py, test_faults_soak.py, test_benchmark_fleet.py);
``test_every_benchmark_has_a_smoke_test`` keeps that list whole.
"""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: benchmarks whose smoke test lives in another module
ELSEWHERE = {"course_rush": "test_course_rush.py", "faults_soak": "test_faults_soak.py",
             "fleet": "test_benchmark_fleet.py"}
SUMMARY = {"min", "median", "p95", "max", "n"}


def quick_run(name: str, out: Path, timeout: int) -> dict:
    """``python -m benchmarks NAME --quick --out OUT``: its JSON, once the PNG is checked."""
    result = subprocess.run([sys.executable, "-m", "benchmarks", name, "--quick", "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (out / f"{name}.png").stat().st_size > 0
    data = json.loads((out / f"{name}.json").read_text())
    assert data["_meta"]["benchmark"] == name and data["_meta"]["quick"] is True, data["_meta"]
    return data


def check_summary(summary: dict, samples: list, n: int) -> None:
    """A ``benchmarks.common.summary`` of ``samples``, which are ``n`` positive numbers."""
    assert set(summary) == SUMMARY and summary["n"] == n == len(samples), (summary, samples)
    assert all(s > 0 for s in samples), samples
    assert summary["min"] == min(samples) and summary["max"] == max(samples), (summary, samples)
    assert summary["median"] == pytest.approx(statistics.median(samples)), (summary, samples)


def test_every_benchmark_has_a_smoke_test():
    sys.path.insert(0, str(REPO))
    from benchmarks.__main__ import available

    assert set(available()) == set(CHECKS) | set(ELSEWHERE), available()
    for name, module in ELSEWHERE.items():
        text = (Path(__file__).parent / module).read_text()
        assert f'"{name}", "--quick"' in text, f"{module} does not run {name} --quick"


def check_ssh_tunnel(data: dict) -> None:
    """20 tunnels, 32 MiB: bulk through the asyncssh tunnel, OpenSSH and direct; round trips;
    per-tunnel memory and the loop's stalls."""
    assert data["bulk_mib"] == 32, data
    best = data["bulk_best_mib_per_s"]
    for name in ("direct", "openssh", "asyncssh"):
        assert len(data["bulk_mib_per_s"][name]) == 1 and best[name] == max(data["bulk_mib_per_s"][name]) > 0
        assert data["latency"][name]["rtt_us_p50"] > 0, data["latency"]
    assert data["bulk_ratio_asyncssh_to_openssh"] == round(best["asyncssh"] / best["openssh"], 2), data
    for name in ("asyncssh", "openssh"):
        assert data["bulk_client_cpu_seconds_per_gib"][name] > 0, data["bulk_client_cpu_seconds_per_gib"]
    scale = data["scale"]
    assert scale["n"] == 20 and scale["kib_per_tunnel"] > 0 and scale["openssh_kib_per_process_pss"] > 0, scale
    assert {"idle_keepalives", "baseline_no_tunnels"} <= set(scale["max_stall_ms"]), scale
    burst = scale["burst_stall_ms_paced_vs_unpaced"]
    assert burst["channels_per_pass"] > 0 and len(burst["paced"]) == len(burst["unpaced"]) == 1, burst
    assert all(ms >= 0 for ms in burst["paced"] + burst["unpaced"]), burst


def check_ldap_hooks(data: dict) -> None:
    """30 concurrent first spawns against the real slapd: every uid distinct, no failure, the
    loop's longest stall measured beside ldap3 called on the loop."""
    hook = data["hook"]
    assert data["n"] == hook["spawns"] == hook["entries"] == 30, hook
    assert hook["failures"] == 0 and hook["failure_examples"] == [], hook
    assert data["uids_unique"] is True and hook["distinct_uids"] == hook["distinct_entry_uids"] == 30, hook
    assert 0 < hook["p50_ms"] <= hook["p95_ms"] and hook["max_stall_ms"] > 0, hook
    assert data["reference_direct_threads"]["failures"] == 0, data["reference_direct_threads"]
    assert data["reference_blocking_on_loop"]["max_stall_ms"] > 0, data["reference_blocking_on_loop"]


def check_hub_baseline(data: dict) -> None:
    """3 hub start-ups, 3 spawns through the REST API, 3 direct server starts."""
    samples = data["samples"]
    for key in ("hub_startup_s", "local_spawn_s", "direct_server_start_s"):
        check_summary(data[key], samples[key], 3)
    assert data["spawn_over_direct_ratio"] == pytest.approx(
        statistics.median(samples["local_spawn_s"]) / statistics.median(samples["direct_server_start_s"]))


def check_multiplespawner_spawn(data: dict) -> None:
    """One round (two blocks of each hub, one hub at a time), 2 timed spawns per block."""
    schedule = data["schedule"]
    assert schedule["hubs_running_at_once"] == 1 and schedule["timed_spawns_per_block"] == 2, schedule
    blocks = schedule["block_order"]
    assert sorted(blocks) == ["direct", "direct", "multiple", "multiple"], blocks
    samples = data["samples"]
    for key in ("direct_spawn_s", "multiple_spawn_s"):
        check_summary(data[key], samples[key], 4)
    assert data["multiple_over_direct_ratio"] == pytest.approx(
        statistics.median(samples["multiple_spawn_s"]) / statistics.median(samples["direct_spawn_s"]))
    low, high = data["ratio_95ci"]
    assert 0 < low <= high, data["ratio_95ci"]
    for hub in ("direct", "multiple"):
        assert data["before_start_ms"][hub]["n"] > 0, data["before_start_ms"]


def check_block(block: dict, n: int, phases: set) -> None:
    """A block of ``n`` timed spawns: a summary of each of ``phases`` and of the total."""
    assert set(block["phases"]) == phases, block
    for summ in [*block["phases"].values(), block["total"]]:
        assert set(summ) == SUMMARY and summ["n"] == n, block
        assert 0 <= summ["min"] <= summ["median"] <= summ["max"], block
    assert sum(p["min"] for p in block["phases"].values()) <= block["total"]["max"], block


MACHINE_PHASES = {"create", "wait", "configure", "start"}


def check_time_to_lab(data: dict) -> None:
    """2 alternating spawns of the prepared-image container machine and of the bare-metal
    reference; the configuration cache's first spawn, 2 with the hash unchanged and 2 with a new
    key each time. No plain-image or VM row in ``--quick``."""
    assert data["n"] == 2, data
    check_block(data["docker_prepared_image"], 2, MACHINE_PHASES)
    check_block(data["bare_metal_reference"], 2, {"start"})
    assert data["ratio_total_docker_vs_bare_metal"] == pytest.approx(
        data["docker_prepared_image"]["total"]["median"] / data["bare_metal_reference"]["total"]["median"])
    cache = data["configuration_cache"]
    first = cache["first_spawn"]
    assert set(first["phases"]) == {"configure", "start"} and first["total"] >= sum(first["phases"].values()) * 0.9
    check_block(cache["second_spawns_hash_matches"], 2, {"configure", "start"})
    check_block(cache["second_spawns_new_key_each_time"], 2, {"configure", "start"})
    assert "docker_plain_image_cold" not in data and "libvirt_vm" not in data, sorted(data)


def check_vm_time_to_lab(data: dict) -> None:
    """One spawn on a fresh libvirt VM from the prepared image: every phase, and the
    configurer took the prepared-image path."""
    assert data["n"] == 1 and len(data["runs"]) == 1 and Path(data["image"]).exists(), data
    run = data["runs"][0]
    assert set(run["phases"]) == MACHINE_PHASES and run["prepared_image_path"] is True, run
    check_block({"phases": data["phases"], "total": data["total"]}, 1, MACHINE_PHASES)
    assert data["total"]["median"] == run["total"] >= sum(run["phases"].values()) * 0.9, data


CHECKS = {
    "ssh_tunnel": (check_ssh_tunnel, 300),
    "ldap_hooks": (check_ldap_hooks, 300),
    "hub_baseline": (check_hub_baseline, 600),
    "multiplespawner_spawn": (check_multiplespawner_spawn, 900),
    "time_to_lab": (check_time_to_lab, 900),
    "vm_time_to_lab": (check_vm_time_to_lab, 1200),
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_quick_run_completes_and_writes_its_outputs(name, tmp_path):
    check, timeout = CHECKS[name]
    check(quick_run(name, tmp_path, timeout))
