"""Fault cells for the front proxy: nginx in front of a header-login hub (docs/reliability.md).

nginx is the front proxy of the header-login example (``test_header_nginx.front_proxied_hub``):
it logs the person in and forwards the identity headers and the shared secret. It is on every
user's data path, so while it is down or frozen users reach nothing; what must hold is that the
hub and the servers behind it carry on untouched, that a restarted nginx needs nobody (logins
and running servers work through it at once), and that a frozen one costs users a bounded wait.
"""

import secrets
import time

import pytest
import requests

from tests.fixtures.faults import hung, refusing, restart
from tests.fixtures.procs import wait_until
from tests.integration.test_faults import direct_api, hub_latency_during
from tests.integration.test_header_nginx import front_proxied_hub

#: how long a user's browser waits on a frozen nginx in this cell (seconds)
CLIENT_TIMEOUT = 3.0


def test_nginx_restart_hang_refuse(hub_factory, nginx_factory, unix_user):
    """One person logged in through nginx with a running server.

    * restarted: a new login through nginx works at once and the running server answers
      through it again;
    * frozen (SIGSTOP on its process group, workers included): a user's request times out
      (bounded by the client); the hub's own API answers within 2 s meanwhile and the running
      server keeps answering behind nginx (through configurable-http-proxy); after SIGCONT
      both work through nginx;
    * stopped: refused at once; the hub and the server carry on; started again, a login works;
    * no server was lost or added, no process of nginx is left after its cleanup.
    """
    name, password = unix_user(), secrets.token_urlsafe(8)
    hub, nginx, _ = front_proxied_hub(hub_factory, nginx_factory, name, password)

    def login_and_reach_server(server: bool = True) -> float:
        """Log in through nginx (fresh browser) and ask the running server; seconds taken."""
        started = time.monotonic()
        with requests.Session() as browser:
            browser.auth = (name, password)
            r = browser.get(f"{nginx.url}/hub/login", params={"next": "/hub/home"}, timeout=30)
            assert r.status_code == 200 and name in r.text, r.text[-500:]
            if not server:
                return 0.0
            r = browser.get(f"{nginx.url}/user/{name}/probe", timeout=30)
            assert r.status_code == 200 and r.text.endswith("/probe"), r.status_code
        return time.monotonic() - started

    def server_behind_nginx_answers() -> bool:
        r = hub.server_request(name, "probe")  # through configurable-http-proxy, not nginx
        return r.status_code == 200 and r.text.endswith("/probe")

    login_and_reach_server(server=False)  # creates the user at its first login
    hub.spawn(name, timeout=60)
    login_and_reach_server()

    took = restart(nginx)
    print(f"nginx restart: listening again after {took:.2f} s, "
          f"login + server through it {login_and_reach_server():.2f} s later")

    with hung(nginx, group=True):
        def frozen_request():
            started = time.monotonic()
            with pytest.raises(requests.Timeout):
                requests.get(f"{nginx.url}/hub/login", auth=(name, password), timeout=CLIENT_TIMEOUT)
            return time.monotonic() - started

        waited, slowest = hub_latency_during(hub, frozen_request, direct=True)
        assert server_behind_nginx_answers()
    print(f"nginx hung: a user's request gave up after {waited:.2f} s (client timeout), "
          f"slowest hub API answer {slowest:.2f} s")
    assert slowest < 2.0, slowest
    print(f"nginx resumed: login + server through it {login_and_reach_server():.2f} s after SIGCONT")

    with refusing(nginx):
        started = time.monotonic()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{nginx.url}/hub/login", auth=(name, password), timeout=30)
        refused = time.monotonic() - started
        assert refused < 1.0, refused
        assert direct_api(hub, "GET", "/").status_code == 200
        assert server_behind_nginx_answers()
    print(f"nginx stopped: refused after {refused:.3f} s; started again, "
          f"login + server through it {login_and_reach_server():.2f} s later")

    servers = {u["name"] for u in hub.api("GET", "/users", params={"state": "active"}).json()}
    assert servers == {name}
    nginx.cleanup()
    wait_until(lambda: not nginx.process.alive(), timeout=10, message="nginx gone")
