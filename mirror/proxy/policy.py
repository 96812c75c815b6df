"""Pure freshness, retry and circuit-breaker rules, with time passed in so tests need no clock."""

from __future__ import annotations

import email.utils
import math

# Answers that say the upstream itself is overloaded or down, whatever was asked: only these
# (and failures to connect or to get an answer in time) are retried and counted by the
# breaker. A 500 or 501 answers this one request (distribution answers 500 to a name too long
# for it), so a client could provoke it at will: it is reported at once and counts for nothing.
UNWELL_STATUSES = frozenset({429, 502, 503, 504})


def tag_is_fresh(confirmed_at: float, now: float, ttl_seconds: float) -> bool:
    """A tag answer is trusted without asking upstream for `ttl_seconds` after confirmation."""
    return 0 <= now - confirmed_at < ttl_seconds


class CircuitBreaker:
    """Stops every request from waiting on an upstream that keeps failing.

    After `threshold` failures with no success between them the breaker opens: requests fail
    at once for `cooldown` seconds. Then one trial request is let through (half-open); its
    success closes the breaker, its failure opens it again, an inconclusive end lets the
    next request try. Time is passed in.
    """

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None
        self._trial_running = False

    @property
    def is_open(self) -> bool:
        """Open or half-open: requests are being refused, or one trial is out."""
        return self.opened_at is not None

    def allow(self, now: float) -> bool:
        if self.opened_at is None or self.threshold <= 0:
            return True
        if now - self.opened_at < self.cooldown or self._trial_running:
            return False
        self._trial_running = True  # half-open: exactly one request tries
        return True

    def succeeded(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._trial_running = False

    def inconclusive(self) -> None:
        """A request ended without saying anything about the upstream's health."""
        self._trial_running = False

    def failed(self, now: float) -> None:
        self.failures += 1
        self._trial_running = False
        if self.threshold > 0 and (self.failures >= self.threshold or self.opened_at):
            self.opened_at = now

    def retry_in(self, now: float) -> float:
        return max(0.0, (self.opened_at or now) + self.cooldown - now)


def retry_delay(attempt: int, retry_after: str | None, now: float, max_wait: float) -> float:
    """Seconds to wait before retry number `attempt` (1-based).

    An upstream's Retry-After (seconds or an HTTP date) is honoured up to `max_wait`;
    otherwise exponential backoff from 0.2 s, also capped.
    """
    if retry_after:
        seconds = _parse_retry_after(retry_after, now)
        if seconds is not None:
            return min(max(seconds, 0.0), max_wait)
    return min(0.2 * 2 ** (attempt - 1), max_wait)


def _parse_retry_after(value: str, now: float) -> float | None:
    value = value.strip()
    try:
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - now
