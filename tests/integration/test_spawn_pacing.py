"""examples/header-nginx/hub-spawn-pacing.conf in a real nginx: a class's spawn requests sent in
the same instant reach the hub spread out at the configured rate, none refused, while every
other request (the REST API's reads, pages, a user's own server) passes at once. The upstream is
a small recording HTTP server standing in for the hub, so the arrival times are nginx's alone."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.fixtures.nginx import Nginx

PACING_SNIPPET = Path(__file__).resolve().parents[2] / "examples" / "header-nginx" / "hub-spawn-pacing.conf"
RATE = 5  # the snippet's rate per second


class Recorder(BaseHTTPRequestHandler):
    arrivals: list = []

    def _answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Recorder.arrivals.append((time.monotonic(), self.command, self.path))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args):
        pass


class Upstream(ThreadingHTTPServer):
    request_queue_size = 128  # the whole burst at once (the default 5 would drop SYNs: 1 s retries)


@pytest.fixture(scope="module")
def paced_nginx():
    upstream = Upstream(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    nginx = Nginx(f"http://127.0.0.1:{upstream.server_port}", http_directives=PACING_SNIPPET.read_text(),
                  location_directives="limit_req zone=hub_spawns burst=10000;")
    try:
        yield nginx.start()
    finally:
        nginx.cleanup()
        upstream.shutdown()
        upstream.server_close()


def test_a_class_of_spawn_requests_is_spread_out_and_nothing_else_waits(paced_nginx):
    Recorder.arrivals.clear()
    base = paced_nginx.url
    spawns = [("POST", f"/hub/api/users/s{i}/server") for i in range(20)]
    spawns += [("POST", "/hub/api/users/s20/servers/gpu"), ("POST", "/hub/spawn"), ("POST", "/hub/spawn/s21/x")]
    others = [("GET", f"/hub/api/users/s{i}") for i in range(10)]
    others += [("GET", "/hub/api/users/s0/server/progress"), ("POST", "/hub/api/users/s0/tokens"),
               ("POST", "/user/s0/hub/api/users/s0/server"), ("DELETE", "/hub/api/users/s1/server"),
               ("GET", "/hub/spawn/s2")]

    def send(request):
        method, path = request
        return requests.request(method, base + path, json={}, timeout=60).status_code

    t0 = time.monotonic()
    with ThreadPoolExecutor(len(spawns) + len(others)) as pool:
        codes = list(pool.map(send, spawns + others))
    assert codes == [200] * len(codes), codes  # nothing refused
    arrived = {(m, p): t - t0 for t, m, p in Recorder.arrivals}
    spawn_times = sorted(arrived[r] for r in spawns)
    other_times = [arrived[r] for r in others]
    # paced: the n-th spawn request no sooner than (n - 1) / RATE after the first
    span = spawn_times[-1] - spawn_times[0]
    assert span >= (len(spawns) - 1) / RATE * 0.9, spawn_times
    # the rest went straight through while the spawns were held back
    assert max(other_times) < 1.0, sorted((arrived[r], r) for r in others)[-3:]
