"""How many decoded pixels the requests in flight may hold at once.

Each image is bounded on its own (bytes, pixels) and each request by its image count and total
pixels, but a decoded image costs memory until its request is answered: 3-6 bytes a pixel as
decoded, more while it is scored and its heatmap drawn. Requests reserve their images' pixels, read
from the headers before anything is decoded (a 16-bit image's twice: it holds twice the bytes).

A request that does not fit waits, in line, for at most ``wait_s``: first come, first served, so
that small requests cannot keep a large one out for ever (they did, when a request was tried once
and told to retry). The line holds at most one budget's worth of pixels; past that, or past its
wait, a request is answered 503 with ``Retry-After`` instead of decoding, so that a burst of large
images slows clients down rather than exhausting the machine's memory.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from serve.errors import OverloadedError

__all__ = ["LOOK_S", "PixelBudget"]

LOOK_S = 0.1
"""How often a request waiting in line asks whether its client is still there."""


@dataclass
class _Waiter:
    pixels: int
    granted: asyncio.Future[None]


class PixelBudget:
    """A counter of decoded pixels held, at most ``limit``, with a first-come line of requests
    waiting for room. Used from one event loop (each worker process has its own budget)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"pixel budget {limit} must be >= 1")
        self.limit = limit
        self._held = 0
        self._line: collections.deque[_Waiter] = collections.deque()

    @property
    def held(self) -> int:
        """Pixels reserved by requests now in flight."""
        return self._held

    @property
    def waiting(self) -> int:
        """Pixels of the requests waiting in line."""
        return sum(w.pixels for w in self._line)

    @asynccontextmanager
    async def hold(
        self,
        pixels: int,
        *,
        retry_after_s: int,
        wait_s: float = 0.0,
        gone: Callable[[], Awaitable[bool]] | None = None,
    ) -> AsyncIterator[None]:
        """Reserve ``pixels`` for the block's duration, waiting in line at most ``wait_s``; while in
        line, ``gone`` is asked every :data:`LOOK_S` whether the client has gone away (a server
        does not cancel a request whose client left).

        Raises:
            OverloadedError: no room within ``wait_s``, the line already holds a budget's worth, or
                the client went away while in line.
        """
        if not self._line and self._held + pixels <= self.limit:
            self._held += pixels
        else:
            await self._wait(pixels, retry_after_s=retry_after_s, wait_s=wait_s, gone=gone)
        try:
            yield
        finally:
            self._release(pixels)

    async def _wait(
        self, pixels: int, *, retry_after_s: int, wait_s: float, gone: Callable[[], Awaitable[bool]] | None
    ) -> None:
        if wait_s <= 0 or self.waiting + pixels > self.limit:
            raise self._overloaded(pixels, retry_after_s)
        waiter = _Waiter(pixels, asyncio.get_running_loop().create_future())
        self._line.append(waiter)
        until = time.monotonic() + wait_s
        try:
            while not waiter.granted.done() and (left := until - time.monotonic()) > 0:
                await asyncio.wait({waiter.granted}, timeout=min(left, LOOK_S))
                if not waiter.granted.done() and gone is not None and await gone():
                    break
        except BaseException:  # the request was cancelled: leave the line
            self._leave(waiter)
            raise
        if not waiter.granted.done():
            self._leave(waiter)
            raise self._overloaded(pixels, retry_after_s)

    def _overloaded(self, pixels: int, retry_after_s: int) -> OverloadedError:
        return OverloadedError(
            f"the server is holding {self._held:,} decoded pixels of its {self.limit:,} "
            f"(max_pixels_in_flight), {self.waiting:,} more waiting; this request's {pixels:,} must wait",
            retry_after_s=retry_after_s,
        )

    def _leave(self, waiter: _Waiter) -> None:
        if waiter.granted.done():  # let in just as it gave up: give the room back
            self._release(waiter.pixels)
            return
        waiter.granted.cancel()
        self._line.remove(waiter)
        self._let_in()  # the first in line leaving may let the next in

    def _release(self, pixels: int) -> None:
        self._held -= pixels
        self._let_in()

    def _let_in(self) -> None:
        while self._line and self._held + self._line[0].pixels <= self.limit:
            waiter = self._line.popleft()
            self._held += waiter.pixels
            waiter.granted.set_result(None)
