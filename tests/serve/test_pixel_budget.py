"""The decoded-pixel budget: first come, first served, a bounded line, and no pixel leaked."""

from __future__ import annotations

import asyncio

import pytest

from serve.errors import OverloadedError
from serve.pixel_budget import PixelBudget


async def _hold(
    budget: PixelBudget, pixels: int, order: list[str], name: str, release: asyncio.Event
) -> None:
    async with budget.hold(pixels, retry_after_s=1, wait_s=2):
        order.append(name)
        await release.wait()


def test_a_large_request_is_not_kept_out_by_smaller_ones_arriving_after_it() -> None:
    """A request was tried once: small ones kept a large one out for as long as they kept coming."""

    async def scenario() -> list[str]:
        budget, order = PixelBudget(100), []
        first, rest = asyncio.Event(), asyncio.Event()
        a = asyncio.create_task(_hold(budget, 60, order, "a", first))
        await asyncio.sleep(0)
        large = asyncio.create_task(_hold(budget, 50, order, "large", rest))
        await asyncio.sleep(0)
        small = asyncio.create_task(_hold(budget, 30, order, "small", rest))  # fits now, but comes second
        await asyncio.sleep(0.01)
        assert order == ["a"] and budget.waiting == 80
        first.set()
        await asyncio.sleep(0.01)
        assert order == ["a", "large", "small"] and budget.held == 80
        rest.set()
        await asyncio.gather(a, large, small)
        assert budget.held == 0 and budget.waiting == 0
        return order

    asyncio.run(scenario())


@pytest.mark.parametrize("case", ["line-full", "waited-too-long", "cancelled", "client-gone"])
def test_a_request_that_cannot_wait_leaves_nothing_held_or_in_line(case: str) -> None:
    async def scenario() -> None:
        budget, order, hold = PixelBudget(100), [], asyncio.Event()
        a = asyncio.create_task(_hold(budget, 90, order, "a", hold))
        await asyncio.sleep(0)
        if case == "line-full":  # the line holds at most a budget's worth
            b = asyncio.create_task(_hold(budget, 80, order, "b", hold))
            await asyncio.sleep(0)
            with pytest.raises(
                OverloadedError, match=r"holding 90 decoded pixels of its 100 .*, 80 more waiting"
            ):
                async with budget.hold(30, retry_after_s=3, wait_s=2):
                    pass
            hold.set()
            await asyncio.gather(a, b)
        elif case == "waited-too-long":
            with pytest.raises(OverloadedError) as caught:
                async with budget.hold(20, retry_after_s=3, wait_s=0.05):
                    pass
            assert caught.value.retry_after_s == 3 and budget.waiting == 0
            hold.set()
            await a
        elif case == "client-gone":  # a server does not cancel a request whose client left: it asks
            asked = []

            async def gone() -> bool:
                asked.append(1)
                return len(asked) >= 2

            started = asyncio.get_running_loop().time()
            with pytest.raises(OverloadedError):
                async with budget.hold(20, retry_after_s=3, wait_s=2, gone=gone):
                    order.append("gone")
            assert asyncio.get_running_loop().time() - started < 1 and budget.waiting == 0  # not 2 s
            hold.set()
            await a
        else:  # the request was cancelled while in line
            waiting = asyncio.create_task(_hold(budget, 20, order, "gone", hold))
            await asyncio.sleep(0.01)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert budget.waiting == 0
            hold.set()
            await a
        assert budget.held == 0 and budget.waiting == 0 and "gone" not in order

    asyncio.run(scenario())
