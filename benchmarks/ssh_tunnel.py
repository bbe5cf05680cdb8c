"""SSH tunnel of CloudSSHSpawner (asyncssh) against OpenSSH ``ssh -L``, on one loopback sshd.

Measured in one run, everything on loopback, bounded in bytes, round trips and time:

* bulk: MiB/s through a local forward into a sink, our tunnel vs ``ssh -N -L`` with the same
  cipher (aes128-gcm), alternating, best of the repetitions; the ratio is what matters, and
  the tunnel process's CPU seconds per GiB, which a busy shared machine does not distort;
* latency: 1-byte round trips on an open connection, and connect + first round trip on a new
  connection, p50/p95 for direct loopback, ``ssh -L`` and our tunnel;
* scale (reference: the same loop's stall with no tunnel, measured first): N tunnels (one SSH connection with a local and a remote forward each, as the spawner
  keeps per server) in one event loop: memory per tunnel, longest event-loop stall while
  opening them, while idle with keepalives, and while all N carry a round trip at once; that
  burst's stall again with the tunnels' channel pacing and without it (the reference),
  alternating, 3 rounds each (``--quick``: 1);
  OpenSSH reference: memory (PSS) per ``ssh -N -L`` process.

The tunnel under test runs in a child process (as it runs inside the hub), so the load
generator never shares its event loop.
"""

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import StallMonitor, new_figure, percentile, save

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fixtures.net import free_port, wait_for_port  # noqa: E402
from tests.fixtures.sshd import SSHD, make_client_key  # noqa: E402

CIPHER = "aes128-gcm@openssh.com"
CHUNK = 1 << 20

# A sink (read to EOF, then close) and an echo server, in their own process.
SERVERS = r"""
import socket, sys, threading
def serve(sock, handler):
    while True:
        conn, _ = sock.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handler, args=(conn,), daemon=True).start()
def sink(conn):
    while conn.recv(1 << 20):
        pass
    conn.close()
def echo(conn):
    while data := conn.recv(65536):
        conn.sendall(data)
    conn.close()
socks = []
for handler in (sink, echo):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0)); s.listen(256); socks.append(s)
    threading.Thread(target=serve, args=(s, handler), daemon=True).start()
print(socks[0].getsockname()[1], socks[1].getsockname()[1], flush=True)
sys.stdin.read()
"""

# Our tunnel in its own process: local forwards to the sink and the echo server.
TUNNEL = r"""
import asyncio, json, logging, sys
from cloudsshspawner.tunnel import SSHTarget, SSHTunnel
spec = json.loads(sys.argv[1])
async def main():
    t = SSHTunnel(SSHTarget(**spec["target"]))
    await t.connect()
    ports = [await t.forward_local(0, p) for p in spec["dest_ports"]]
    print(*ports, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await t.close()
asyncio.run(main())
"""


def _spawn(code, *args):
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError(f"helper exited: {code[:60]}")
    return proc, [int(x) for x in line.split()]


def _end(proc):
    try:
        proc.stdin.close()
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _openssh(sshd, key, known_hosts, forwards):
    """``ssh -N -L`` for each (local_port, dest_port); returns the Popen."""
    argv = ["ssh", "-N", "-i", str(key), "-p", str(sshd.port), "-c", CIPHER,
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes"]
    for local, dest in forwards:
        argv += ["-L", f"127.0.0.1:{local}:127.0.0.1:{dest}"]
    proc = subprocess.Popen(argv + [f"root@{sshd.host}"], stdin=subprocess.DEVNULL)
    for local, _ in forwards:
        wait_for_port("127.0.0.1", local, timeout=15, process=proc)
    return proc


def _bulk(port, total):
    chunk = b"\0" * CHUNK
    with socket.create_connection(("127.0.0.1", port)) as s:
        start = time.perf_counter()
        for _ in range(total // CHUNK):
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
        return total / (1 << 20) / (time.perf_counter() - start)


def _rtt(port, n):
    out = []
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(n):
            t = time.perf_counter()
            s.sendall(b"x")
            s.recv(1)
            out.append((time.perf_counter() - t) * 1e6)
    return out


def _connect_rtt(port, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"x")
            s.recv(1)
        out.append((time.perf_counter() - t) * 1e6)
    return out


def _cpu_seconds(pid):
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pss_kib(pid):
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError("no Pss")


def _own_cpu():
    t = os.times()
    return t.user + t.system


def _rss_kib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def _many_tunnels(target_kwargs, n, echo_port, hub_like_port):
    """Open n tunnels (local + remote forward each) in this loop; memory and stalls."""
    from cloudsshspawner.tunnel import SSHTarget, SSHTunnel

    def new():
        return SSHTunnel(SSHTarget(**target_kwargs), keepalive_interval=1)

    async with StallMonitor() as baseline:
        await asyncio.sleep(5)  # reference: the same loop with no tunnel, on this (shared) machine
    warm = new()  # imports, key parsing, first-connection caches are not per-tunnel cost
    await warm.connect()
    await warm.forward_local(0, echo_port)
    base = _rss_kib()
    tunnels = []
    sem = asyncio.Semaphore(8)

    async def open_one():
        t = new()
        async with sem:
            await t.connect()
            await t.forward_local(0, echo_port)
            await t.forward_remote(0, "127.0.0.1", hub_like_port)
        tunnels.append(t)

    started = time.perf_counter()
    async with StallMonitor() as opening:
        await asyncio.gather(*(open_one() for _ in range(n)))
    open_seconds = time.perf_counter() - started
    async with StallMonitor() as idle:
        await asyncio.sleep(5)  # 5 keepalive rounds on every connection
    per_tunnel_kib = (_rss_kib() - base) / n

    async def ping(t):
        r, w = await asyncio.open_connection("127.0.0.1", t.port_of("local"))
        t0 = time.perf_counter()
        w.write(b"x")
        await r.readexactly(1)
        w.close()
        return (time.perf_counter() - t0) * 1e6

    cpu_before, wall_before = _own_cpu(), time.perf_counter()
    async with StallMonitor() as busy:
        rtts = await asyncio.gather(*(ping(t) for t in tunnels))
    busy_cpu_ms = (_own_cpu() - cpu_before) * 1000
    busy_wall_ms = (time.perf_counter() - wall_before) * 1000
    cpu_before = _own_cpu()
    async with StallMonitor() as closing:
        await asyncio.gather(*(t.close() for t in tunnels))
    closing_cpu_ms = (_own_cpu() - cpu_before) * 1000
    await warm.close()
    return {
        "n": n,
        "open_seconds": round(open_seconds, 2),
        "kib_per_tunnel": round(per_tunnel_kib, 1),
        "max_stall_ms": {
            "baseline_no_tunnels": round(baseline.max_stall_ms, 1),
            "opening": round(opening.max_stall_ms, 1),
            "idle_keepalives": round(idle.max_stall_ms, 1),
            "all_busy": round(busy.max_stall_ms, 1),
            "closing": round(closing.max_stall_ms, 1),
        },
        "all_busy_loop_cpu_ms": round(busy_cpu_ms, 1),
        "all_busy_wall_ms": round(busy_wall_ms, 1),
        "closing_loop_cpu_ms": round(closing_cpu_ms, 1),
        "concurrent_first_rtt_us_p50": round(percentile(rtts, 50)),
        "concurrent_first_rtt_us_p95": round(percentile(rtts, 95)),
    }


PACING_ROUNDS = 3


def _burst_stalls(target, n, echo, rounds) -> dict:
    """The longest loop stall while all ``n`` tunnels carry a new connection at once, with the
    tunnels' channel pacing (``cloudsshspawner.tunnel.CHANNELS_PER_PASS``) and without it (the
    reference: every accepted connection opens its channel at once), alternating, ``rounds``
    each; each sample is a fresh set of ``n`` tunnels in a fresh event loop."""
    from cloudsshspawner import tunnel

    per_pass = tunnel.CHANNELS_PER_PASS
    stalls = {"paced": [], "unpaced": []}
    try:
        for i in range(rounds):
            for mode in ("unpaced", "paced") if i % 2 == 0 else ("paced", "unpaced"):
                tunnel.CHANNELS_PER_PASS = per_pass if mode == "paced" else 1 << 30
                tunnel._PACERS.clear()
                stalls[mode].append(asyncio.run(_many_tunnels(target, n, echo, echo))["max_stall_ms"]["all_busy"])
    finally:
        tunnel.CHANNELS_PER_PASS = per_pass
        tunnel._PACERS.clear()
    return {"channels_per_pass": per_pass, **stalls}


def run(quick: bool) -> dict:
    total = (32 if quick else 256) << 20
    reps = 1 if quick else 3
    n_rtt, n_conn = (300, 40) if quick else (3000, 300)
    n_tunnels = 20 if quick else 100
    n_openssh_procs = 3 if quick else 10

    work = Path(tempfile.mkdtemp(prefix="bench-ssh-"))
    sshd = SSHD()
    servers = tunnel = openssh = None
    extra = []
    try:
        key, public = make_client_key(work)
        sshd.authorize("root", public)
        sshd.start()
        known = sshd.write_known_hosts(work / "known_hosts")
        target = {"host": sshd.host, "port": sshd.port, "username": "root",
                  "key_path": str(key), "host_key": sshd.host_key}
        servers, (sink, echo) = _spawn(SERVERS)
        tunnel, (a_sink, a_echo) = _spawn(TUNNEL, json.dumps({"target": target, "dest_ports": [sink, echo]}))
        o_sink, o_echo = free_port(), free_port()
        openssh = _openssh(sshd, key, known, [(o_sink, sink), (o_echo, echo)])

        bulk = {"asyncssh": [], "openssh": [], "direct": []}
        cpu = {"asyncssh": 0.0, "openssh": 0.0}
        for _ in range(reps):
            for name, port, pid in (("asyncssh", a_sink, tunnel.pid), ("openssh", o_sink, openssh.pid)):
                before = _cpu_seconds(pid)
                bulk[name].append(_bulk(port, total))
                cpu[name] += _cpu_seconds(pid) - before
            bulk["direct"].append(_bulk(sink, total))
        best = {k: max(v) for k, v in bulk.items()}
        gib = reps * total / (1 << 30)
        cpu_per_gib = {k: round(v / gib, 2) for k, v in cpu.items()}

        latency = {}
        for name, port in (("direct", echo), ("openssh", o_echo), ("asyncssh", a_echo)):
            rtt = _rtt(port, n_rtt)
            conn = _connect_rtt(port, n_conn)
            latency[name] = {
                "rtt_us_p50": round(percentile(rtt, 50), 1),
                "rtt_us_p95": round(percentile(rtt, 95), 1),
                "connect_rtt_us_p50": round(percentile(conn, 50), 1),
                "connect_rtt_us_p95": round(percentile(conn, 95), 1),
            }
        for name in ("openssh", "asyncssh"):
            for k in ("rtt_us_p50", "rtt_us_p95", "connect_rtt_us_p50", "connect_rtt_us_p95"):
                latency[name]["added_" + k] = round(latency[name][k] - latency["direct"][k], 1)

        scale = asyncio.run(_many_tunnels(target, n_tunnels, echo, echo))
        scale["burst_stall_ms_paced_vs_unpaced"] = _burst_stalls(target, n_tunnels, echo, PACING_ROUNDS if not quick else 1)
        for _ in range(n_openssh_procs):
            extra.append(_openssh(sshd, key, known, [(free_port(), echo)]))
        time.sleep(1)
        openssh_pss = [_pss_kib(p.pid) for p in extra]
        scale["openssh_kib_per_process_pss"] = round(sum(openssh_pss) / len(openssh_pss), 1)
        scale["openssh_processes_measured"] = len(extra)

        return {
            "cipher": CIPHER,
            "bulk_mib": total >> 20,
            "bulk_mib_per_s": {k: [round(x, 1) for x in v] for k, v in bulk.items()},
            "bulk_best_mib_per_s": {k: round(v, 1) for k, v in best.items()},
            "bulk_ratio_asyncssh_to_openssh": round(best["asyncssh"] / best["openssh"], 2),
            "bulk_client_cpu_seconds_per_gib": cpu_per_gib,
            "latency": latency,
            "scale": scale,
        }
    finally:
        for proc in extra + ([openssh] if openssh else []):
            proc.terminate()
            proc.wait(timeout=10)
        for proc in (tunnel, servers):
            if proc is not None:
                _end(proc)
        sshd.cleanup()
        subprocess.run(["rm", "-rf", str(work)], check=False)


def plot(result: dict, path: Path) -> None:
    fig, (ax1, ax2, ax3) = new_figure("SSH tunnel: asyncssh (CloudSSHSpawner) vs OpenSSH ssh -L", 3)
    names = ["direct", "openssh", "asyncssh"]
    ax1.bar(names, [result["bulk_best_mib_per_s"][n] for n in names], color=["grey", "C0", "C1"])
    ax1.set_ylabel("MiB/s (best of runs)")
    ax1.set_title(f"bulk {result['bulk_mib']} MiB, ratio {result['bulk_ratio_asyncssh_to_openssh']}")
    x = range(len(names))
    lat = result["latency"]
    ax2.bar([i - 0.2 for i in x], [lat[n]["rtt_us_p50"] for n in names], 0.4, label="p50")
    ax2.bar([i + 0.2 for i in x], [lat[n]["rtt_us_p95"] for n in names], 0.4, label="p95")
    ax2.set_xticks(list(x), names)
    ax2.set_ylabel("round trip, µs")
    ax2.set_title("1-byte round trip")
    ax2.legend()
    s = result["scale"]
    ax3.bar(["asyncssh\n(in hub)", "openssh\n(per process)"],
            [s["kib_per_tunnel"], s["openssh_kib_per_process_pss"]], color=["C1", "C0"])
    ax3.set_ylabel("KiB per tunnel")
    stalls = s["max_stall_ms"]
    burst = s["burst_stall_ms_paced_vs_unpaced"]
    ax3.set_title(f"{s['n']} tunnels: idle stall {stalls['idle_keepalives']} ms"
                  f" (no tunnels: {stalls['baseline_no_tunnels']} ms)\nburst of {s['n']} new connections:"
                  f" stall {statistics.median(burst['paced'])} ms paced,"
                  f" {statistics.median(burst['unpaced'])} ms unpaced (medians)")
    save(fig, path)
