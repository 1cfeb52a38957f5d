"""The one backoff: each caller's parameters give the delays its own formula gave."""

import random
from datetime import timedelta

import pytest
from django.test import override_settings

from mailboxes.backoff import backoff_delay
from mailboxes.services.polling import retry_delay
from mailboxes.services.sending import send_retry_delay
from processing.services.actions import processing_retry_delay


def _seeded(seed: int, compute):
    random.seed(seed)
    return compute()


def test_without_jitter_the_delay_grows_by_the_factor_up_to_the_cap():
    delays = [backoff_delay(attempt=n, first=10, factor=3, cap=200) for n in range(0, 7)]
    assert delays == [timedelta(seconds=s) for s in (10, 10, 30, 90, 200, 200, 200)]


def test_max_exponent_bounds_the_growth_below_the_cap():
    assert backoff_delay(attempt=50, first=1, max_exponent=3) == timedelta(seconds=8)
    assert backoff_delay(attempt=10**6, first=1, cap=5, max_exponent=10) == timedelta(seconds=5)


def test_jitter_spreads_the_delay_within_its_bounds():
    delays = {backoff_delay(attempt=1, first=100, jitter=0.2) for _ in range(200)}
    assert len(delays) > 100
    assert all(timedelta(seconds=80) <= d <= timedelta(seconds=120) for d in delays)


@pytest.mark.parametrize("failures", range(1, 16))
@pytest.mark.parametrize("poll_interval", [1, 30, 60, 600, 7200])
@override_settings(MAILHUB_POLL_BACKOFF_MAX=86400)
def test_poll_retry_delay_is_the_former_formula(failures, poll_interval):
    def former():
        base = min(86400, max(poll_interval, 30) * (2 ** min(failures - 1, 10)))
        return timedelta(seconds=base * random.uniform(0.8, 1.2))

    got = _seeded(failures, lambda: retry_delay(poll_interval=poll_interval, failures=failures))
    assert got == _seeded(failures, former)


@pytest.mark.parametrize("attempts", range(0, 16))
def test_send_retry_delay_is_the_former_formula(attempts):
    def former():
        base = min(3600, 30 * 2 ** max(attempts - 1, 0))
        return timedelta(seconds=base * random.uniform(0.8, 1.2))

    assert _seeded(attempts, lambda: send_retry_delay(attempts)) == _seeded(attempts, former)


@pytest.mark.parametrize("attempts", range(0, 16))
def test_processing_retry_delay_is_the_former_formula(attempts):
    assert processing_retry_delay(attempts) == timedelta(minutes=1) * 4 ** max(attempts - 1, 0)
