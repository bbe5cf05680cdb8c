"""The blocking-call record that integration tests use sees calls on and off the loop's thread."""

import asyncio
import time

import pytest

from tests.fixtures.loop_thread import blocking_calls, public_methods

pytestmark = pytest.mark.unit


class Client:
    def fetch(self, value):
        time.sleep(0.001)
        return value

    def _private(self):
        return "not watched"


async def test_calls_on_the_loop_thread_are_reported_and_thread_calls_are_not():
    client = Client()
    with blocking_calls(public_methods(Client)) as blocking:
        assert client.fetch(1) == 1  # on the loop's thread
        assert await asyncio.to_thread(client.fetch, 2) == 2
        client._private()
    assert blocking.calls == ["Client.fetch", "Client.fetch"]  # _private is not watched
    assert blocking.on_loop == ["Client.fetch"]  # the first call only
    assert Client.fetch.__name__ == "fetch" and not hasattr(Client.fetch, "__wrapped__")  # restored
