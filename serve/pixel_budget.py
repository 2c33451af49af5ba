"""How many decoded pixels the requests in flight may hold at once.

Each image is bounded on its own (bytes, pixels) and each request by its image count and total
pixels, but a decoded image costs memory until its request is answered: 3-6 bytes a pixel as
decoded, more while it is scored and its heatmap drawn. Requests reserve their images' pixels, read
from the headers before anything is decoded (a 16-bit image's twice: it holds twice the bytes),
and a request that would take the server over its budget is answered 503 with ``Retry-After``
instead of decoding, so that a burst of large images slows clients down rather than exhausting the
machine's memory.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from serve.errors import OverloadedError

__all__ = ["PixelBudget"]


class PixelBudget:
    """A counter of decoded pixels held, at most ``limit``; thread-safe."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"pixel budget {limit} must be >= 1")
        self.limit = limit
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        """Pixels reserved by requests now in flight."""
        return self._held

    @contextmanager
    def hold(self, pixels: int, *, retry_after_s: int) -> Iterator[None]:
        """Reserve ``pixels`` for the block's duration.

        Raises:
            OverloadedError: the reservation would take the pixels held over ``limit``.
        """
        with self._lock:
            if self._held + pixels > self.limit:
                raise OverloadedError(
                    f"the server is holding {self._held:,} decoded pixels of its {self.limit:,} "
                    f"(max_pixels_in_flight); this request's {pixels:,} must wait",
                    retry_after_s=retry_after_s,
                )
            self._held += pixels
        try:
            yield
        finally:
            with self._lock:
                self._held -= pixels
