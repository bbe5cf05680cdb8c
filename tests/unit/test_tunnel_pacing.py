"""The tunnels' channel pacing: a burst of new forwarded connections is spread over passes of
the event loop, at most ``per_pass`` per pass, none refused (cloudsshspawner.tunnel)."""

import asyncio

from cloudsshspawner.tunnel import _ChannelPacer, _channel_pacer


async def _admitted_per_pass(pacer: _ChannelPacer, n: int) -> list[int]:
    """Start ``n`` admissions at once; how many were admitted in each pass of the loop (this
    coroutine wakes once per pass with ``sleep(0)``)."""
    admitted = []

    async def one():
        assert await pacer.admit("127.0.0.1", 40000) is True
        admitted.append(1)

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    per_pass, seen = [], 0
    while seen < n:
        await asyncio.sleep(0)
        per_pass.append(len(admitted) - seen)
        seen = len(admitted)
        assert len(per_pass) < 10 * n, per_pass
    await asyncio.gather(*tasks)
    return per_pass


def test_a_burst_is_admitted_a_few_per_pass_and_nothing_is_refused():
    per_pass = asyncio.run(_admitted_per_pass(_ChannelPacer(3), 20))
    assert sum(per_pass) == 20 and max(per_pass) == 3, per_pass


def test_admissions_below_the_limit_go_through_in_the_same_pass():
    assert asyncio.run(_admitted_per_pass(_ChannelPacer(8), 5)) == [5]


def test_one_pacer_per_event_loop():
    async def pacer():
        return _channel_pacer(), _channel_pacer()

    first, again = asyncio.run(pacer())
    assert first is again
    other, _ = asyncio.run(pacer())
    assert other is not first
