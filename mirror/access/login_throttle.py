"""Failed logins slow down whoever keeps failing: per client address and per user name.

Each key may fail a few times for free; after that it must wait before trying again, one
second after the first failure over the limit, doubling with each further failure up to
`CAP_SECONDS`. A try during the wait is answered 429 with `Retry-After` without checking
the password (a correct one too), so guessing gains nothing from it. A success clears the
user name's failures. An address gets more free failures than a user name: many users
share a login node's address. Keys idle for `FORGET_SECONDS` are forgotten, and each table
holds at most `MAX_KEYS` (the least recently failing go first), so an attacker cycling
names or addresses cannot grow memory without limit.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from mirror.errors import TooManyRequests

FREE_FAILURES_PER_USER = 5
FREE_FAILURES_PER_ADDRESS = 20
FIRST_WAIT_SECONDS = 1.0
CAP_SECONDS = 300.0
FORGET_SECONDS = 3600.0
MAX_KEYS = 10_000


@dataclass(slots=True)
class _Failures:
    count: int
    last: float  # when the last one happened (clock seconds)


class _FailureTable:
    """Failures per key, least recently failing first."""

    def __init__(self, free: int, max_keys: int) -> None:
        self._free = free
        self._max_keys = max_keys
        self._by_key: OrderedDict[str, _Failures] = OrderedDict()

    def wait(self, key: str, now: float) -> float:
        """Seconds `key` must still wait before it may try again (0: it may)."""
        failures = self._by_key.get(key)
        if failures is None or failures.count < self._free:
            return 0.0
        backoff = min(CAP_SECONDS, FIRST_WAIT_SECONDS * 2 ** (failures.count - self._free))
        return max(0.0, failures.last + backoff - now)

    def failed(self, key: str, now: float) -> None:
        failures = self._by_key.pop(key, None)
        if failures is None or now - failures.last >= FORGET_SECONDS:
            failures = _Failures(0, now)
        failures.count += 1
        failures.last = now
        self._by_key[key] = failures
        while self._by_key:
            oldest_key, oldest = next(iter(self._by_key.items()))
            if len(self._by_key) <= self._max_keys and now - oldest.last < FORGET_SECONDS:
                break
            del self._by_key[oldest_key]

    def clear(self, key: str) -> None:
        self._by_key.pop(key, None)

    def __len__(self) -> int:
        return len(self._by_key)


class LoginThrottle:
    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS
    ) -> None:
        self._clock = clock
        self.by_address = _FailureTable(FREE_FAILURES_PER_ADDRESS, max_keys)
        self.by_user = _FailureTable(FREE_FAILURES_PER_USER, max_keys)

    def check(self, address: str, user: str) -> None:
        """Raise `TooManyRequests` while the address or the user name must wait."""
        now = self._clock()
        wait = max(self.by_address.wait(address, now), self.by_user.wait(user, now))
        if wait > 0:
            raise TooManyRequests(
                "too many failed logins; wait before trying again", math.ceil(wait)
            )

    def failed(self, address: str, user: str) -> None:
        now = self._clock()
        self.by_address.failed(address, now)
        self.by_user.failed(user, now)

    def succeeded(self, user: str) -> None:
        self.by_user.clear(user)
