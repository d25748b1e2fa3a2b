"""Keeping a transfer at its byte rate: a token bucket shared by every stream, and the read size that suits it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

UNLIMITED_CHUNK = 4 << 20


class TokenBucket:
    """A byte-rate limiter: `take(n)` sleeps just long enough to keep the average at `rate` B/s.

    The bucket starts empty and holds at most `burst` bytes, so short pauses between files
    (WebHDFS round trips) are made up for, but the long-run rate never exceeds the limit.
    """

    def __init__(
        self,
        rate: int,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(64 * 1024, rate // 4)
        self._clock, self._sleep = clock, sleep
        self._tokens = 0.0
        self._last = clock()
        self._lock = threading.Lock()

    def take(self, amount: int) -> None:
        """Account for `amount` bytes, sleeping while the bucket is in debt (safe from several streams)."""
        if self.rate <= 0:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate) - amount
            self._last = now
            debt = -self._tokens
        if debt > 0:
            # Each stream sleeps off the debt it found: together they average the one rate.
            self._sleep(debt / self.rate)


def read_chunk_size(rate_limit_bps: int) -> int:
    """Read size: 4 MiB unlimited (fewer round trips through urllib3); about 1/16 s of bytes when limited."""
    return UNLIMITED_CHUNK if rate_limit_bps <= 0 else max(4096, min(UNLIMITED_CHUNK, rate_limit_bps // 16))
