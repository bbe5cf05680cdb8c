"""Run-time prerequisites of templates (``requires:`` in the catalogue).

A template whose prerequisites are missing is hidden from the form and refused by the API
with the reason. Checks call blocking clients (docker-py), so they run in worker threads and
their answers are cached for ``ttl`` seconds; one check per key is in flight at a time.
"""

from __future__ import annotations

import asyncio
import time

from .catalogue import Template


def _docker_client():
    import docker

    return docker.from_env(timeout=5)


def _docker_answers() -> str | None:
    try:
        client = _docker_client()
        try:
            client.ping()
        finally:
            client.close()
    except Exception as e:
        return f"the Docker engine does not answer ({type(e).__name__})"
    return None


def _docker_has_image(image: str) -> str | None:
    import docker

    try:
        client = _docker_client()
        try:
            client.images.get(image)
        finally:
            client.close()
    except docker.errors.ImageNotFound:
        return f"the image {image} is not in the Docker engine"
    except Exception as e:
        return f"the Docker engine does not answer ({type(e).__name__})"
    return None


class Prerequisites:
    """Cached answers to "can this template run now?"."""

    def __init__(self, ttl: float = 30.0):
        self.ttl = ttl
        self._cache: dict[tuple, tuple[float, str | None]] = {}
        self._locks: dict[tuple, asyncio.Lock] = {}

    async def _check(self, key: tuple, func, *args) -> str | None:
        hit = self._cache.get(key)
        if hit and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._cache.get(key)
            if hit and time.monotonic() - hit[0] < self.ttl:
                return hit[1]
            reason = await asyncio.to_thread(func, *args)
            self._cache[key] = (time.monotonic(), reason)
            return reason

    async def unmet(self, template: Template, deployment: dict | None) -> str | None:
        """The reason ``template`` cannot run on ``deployment`` now, or None if it can."""
        for requirement in template.requires:
            if requirement == "docker":
                reason = await self._check(("docker",), _docker_answers)
            elif requirement == "image":
                image = (deployment or {}).get("image")
                if not image:
                    return "its deployment names no image"
                reason = await self._check(("image", image), _docker_has_image, image)
            else:  # the schema admits only the names above
                reason = f"unknown prerequisite {requirement!r}"
            if reason:
                return reason
        return None
