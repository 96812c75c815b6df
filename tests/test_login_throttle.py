"""Failed logins back off per address and per user name, in bounded memory."""

from __future__ import annotations

import pytest

from mirror.access.login_throttle import (
    CAP_SECONDS,
    FORGET_SECONDS,
    FREE_FAILURES_PER_ADDRESS,
    FREE_FAILURES_PER_USER,
    LoginThrottle,
)
from mirror.errors import TooManyRequests


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def retry_after(throttle: LoginThrottle, address: str, user: str) -> int | None:
    try:
        throttle.check(address, user)
    except TooManyRequests as exc:
        assert exc.status == 429
        return int(exc.headers["Retry-After"])
    return None


def test_a_user_name_waits_longer_after_each_failure_up_to_the_cap():
    clock = Clock()
    throttle = LoginThrottle(clock)
    waits = []
    for failure in range(1, 16):
        assert retry_after(throttle, f"10.0.0.{failure}", "alice") is None
        throttle.failed(f"10.0.0.{failure}", "alice")  # each from another address
        waits.append(retry_after(throttle, "10.0.0.99", "alice"))
        clock.now += waits[-1] or 0
    assert waits[: FREE_FAILURES_PER_USER - 1] == [None] * (FREE_FAILURES_PER_USER - 1)
    assert waits[FREE_FAILURES_PER_USER - 1 :] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert retry_after(throttle, "10.0.0.99", "bob") is None


def test_an_address_gets_more_free_failures_and_then_waits_for_every_name():
    clock = Clock()
    throttle = LoginThrottle(clock)
    for n in range(FREE_FAILURES_PER_ADDRESS):
        assert retry_after(throttle, "192.0.2.7", f"user{n}") is None
        throttle.failed("192.0.2.7", f"user{n}")
    assert retry_after(throttle, "192.0.2.7", "someone-new") == 1
    assert retry_after(throttle, "192.0.2.8", "someone-new") is None


def test_a_success_clears_the_user_name_but_not_the_address():
    clock = Clock()
    throttle = LoginThrottle(clock)
    for _ in range(FREE_FAILURES_PER_USER):
        throttle.failed("192.0.2.7", "alice")
    assert retry_after(throttle, "192.0.2.7", "alice") == 1
    clock.now += 1
    throttle.succeeded("alice")
    throttle.failed("192.0.2.7", "alice")
    assert retry_after(throttle, "192.0.2.7", "alice") is None
    assert len(throttle.by_address) == 1


def test_failures_are_forgotten_after_an_idle_hour():
    clock = Clock()
    throttle = LoginThrottle(clock)
    for _ in range(FREE_FAILURES_PER_USER + 8):
        throttle.failed("192.0.2.7", "alice")
        clock.now += CAP_SECONDS
    clock.now += FORGET_SECONDS
    throttle.failed("192.0.2.7", "alice")
    assert retry_after(throttle, "192.0.2.7", "alice") is None


@pytest.mark.parametrize("max_keys", [10, 1000])
def test_cycling_names_and_addresses_cannot_grow_memory(max_keys):
    clock = Clock()
    throttle = LoginThrottle(clock, max_keys=max_keys)
    for n in range(20 * max_keys):
        throttle.failed(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", f"name-{n}")
    assert len(throttle.by_address) == len(throttle.by_user) == max_keys
