import email.utils

import pytest

from mirror.proxy import policy


def test_tag_freshness_window():
    assert policy.tag_is_fresh(100.0, 100.0, 300)
    assert policy.tag_is_fresh(100.0, 399.9, 300)
    assert not policy.tag_is_fresh(100.0, 400.0, 300)
    assert not policy.tag_is_fresh(100.0, 50.0, 300)  # a future confirmation is not trusted
    assert not policy.tag_is_fresh(100.0, 100.0, 0)


def test_retry_delay_backoff_and_retry_after():
    assert policy.retry_delay(1, None, 0, 10) == pytest.approx(0.2)
    assert policy.retry_delay(3, None, 0, 10) == pytest.approx(0.8)
    assert policy.retry_delay(10, None, 0, 10) == 10
    assert policy.retry_delay(1, "3", 0, 10) == 3
    assert policy.retry_delay(1, "3600", 0, 10) == 10
    date = email.utils.formatdate(1000.0 + 4, usegmt=True)
    assert policy.retry_delay(1, date, 1000.0, 10) == pytest.approx(4)
    assert policy.retry_delay(1, "soon", 0, 10) == pytest.approx(0.2)


def test_circuit_breaker_opens_cools_down_and_tries_once():
    breaker = policy.CircuitBreaker(threshold=3, cooldown=10)
    for now in (0, 1):
        breaker.failed(now)
        assert breaker.allow(now + 0.1)
    breaker.failed(2)
    assert not breaker.allow(2.5) and not breaker.allow(11.9)
    assert breaker.retry_in(5) == 7
    assert breaker.allow(12)  # half-open: one trial request
    assert not breaker.allow(12.1)  # while it runs, others still fail fast
    breaker.failed(13)  # the trial failed: open again at once
    assert not breaker.allow(14) and breaker.allow(23)
    breaker.succeeded()
    assert breaker.allow(23.1) and breaker.failures == 0


def test_a_zero_threshold_disables_the_breaker():
    breaker = policy.CircuitBreaker(threshold=0, cooldown=10)
    for now in range(10):
        breaker.failed(now)
    assert breaker.allow(10)


def test_an_inconclusive_trial_lets_the_next_request_try():
    breaker = policy.CircuitBreaker(threshold=1, cooldown=10)
    breaker.failed(0)
    assert breaker.allow(10)  # the trial
    breaker.inconclusive()  # cancelled or denied: says nothing about the upstream
    assert breaker.allow(10.1) and breaker.opened_at == 0  # another trial, still open
