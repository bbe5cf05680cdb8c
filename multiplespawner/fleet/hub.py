"""The hub's REST API as the fleet service uses it: read servers with their state, stop them.

The service's own token (``$JUPYTERHUB_API_TOKEN``, given by the hub to a managed service)
needs only ``list:users``, ``read:users:groups``, ``read:servers``, ``admin:server_state``
(spawner state: template, provider, machine), ``delete:servers`` and, for the machine
inventory and reaping, ``custom:machines:manage`` (docs/fleet.md).
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import quote, urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

_PAGINATED = "application/jupyterhub-pagination+json"


class HubAPIError(RuntimeError):
    """The hub did not answer as expected; the message says what it said."""


class HubClient:
    """Async calls to ``api_url`` (e.g. ``http://127.0.0.1:8081/hub/api``) with ``token``,
    at most ``connections`` at once (a bulk stop holds one per server it is stopping: the
    hub's DELETE answers when the stop is done, or after its slow_stop_timeout)."""

    def __init__(self, api_url: str, token: str, timeout: float = 30, page_size: int = 200, connections: int = 10):
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.page_size = page_size
        self.http = AsyncHTTPClient(force_instance=True, max_clients=connections)

    async def _call(self, method: str, path: str, accept: str = "application/json", body=None):
        request = HTTPRequest(
            self.api_url + path, method=method,
            headers={"Authorization": f"token {self.token}", "Accept": accept,
                     "Content-Type": "application/json"},
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,
            request_timeout=self.timeout,
        )
        try:
            response = await self.http.fetch(request)
        except HTTPClientError as e:
            return e.code, _message(e.response)
        return response.code, json.loads(response.body) if response.body else None

    async def active_users(self, include_stopped: bool = False) -> list[dict]:
        """Every user with an active (running, starting or stopping) server, their servers'
        models with state, all pages. ``include_stopped``: every user, with their stopped
        servers too (``"stopped": true``; the hub keeps their last state)."""
        users, offset = [], 0
        while True:
            wanted = {"include_stopped_servers": 1} if include_stopped else {"state": "active"}
            query = urlencode({**wanted, "offset": offset, "limit": self.page_size})
            status, page = await self._call("GET", f"/users?{query}", accept=_PAGINATED)
            if status != 200:
                raise HubAPIError(f"the hub refused to list users ({status}): {page}")
            users += page["items"]
            following = (page.get("_pagination") or {}).get("next")
            if not following:
                return users
            offset = following["offset"]

    async def active_servers(self) -> set[str]:
        """``user/name`` of every active server (one listing, all pages)."""
        return {f"{u['name']}/{name}" for u in await self.active_users() for name in (u.get("servers") or {})}

    async def stop(self, user: str, name: str) -> tuple[str, str]:
        """Ask the hub to stop one server: ``(result, reason)`` with result ``stopped`` (the
        hub answered 204: done), ``stopping`` (202: still under way after the hub's
        slow_stop_timeout), ``already gone`` (404) or ``failed`` with the hub's message."""
        path = f"/users/{quote(user, safe='')}/server" + (f"s/{quote(name, safe='')}" if name else "")
        status, message = await self._call("DELETE", path)
        if status == 204:
            return "stopped", ""
        if status == 202:
            return "stopping", ""
        if status == 404:
            return "already gone", ""
        return "failed", f"the hub answered {status}: {message}"

    async def machines(self) -> dict:
        """The hub's machine inventory (``GET /hub/api/multiplespawner/machines``, see
        :mod:`multiplespawner.hub_api`)."""
        return await self._expect(200, "GET", "/multiplespawner/machines")

    async def reap(self, dry_run: bool) -> dict:
        """Ask the hub to reap the machines no server owns (``dry_run``: only name them)."""
        return await self._expect(200, "POST", "/multiplespawner/machines/reap", {"dry_run": dry_run})

    async def _expect(self, status: int, method: str, path: str, body=None):
        code, answer = await self._call(method, path, body=body)
        if code != status:
            raise HubAPIError(f"the hub answered {code}: {answer}")
        return answer

    async def wait_gone(self, servers: set[str], timeout: float) -> set[str]:
        """Wait (at most ``timeout`` seconds) until none of ``servers`` is active; one listing
        per check, however many servers. Returns those still active at the end."""
        deadline = time.monotonic() + timeout
        delay = 0.2
        while servers:
            servers = servers & await self.active_servers()
            if not servers or time.monotonic() > deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        return servers


def _message(response) -> str:
    """The ``message`` of a hub error response, else its first 200 characters."""
    if response is None or not response.body:
        return "no answer"
    try:
        return json.loads(response.body).get("message") or ""
    except (ValueError, AttributeError):
        return response.body[:200].decode(errors="replace")
