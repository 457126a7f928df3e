"""The sliding-window limits on failed web sign-ins, per user name and per client address."""

from __future__ import annotations

import datetime

from agent.web.sign_in_limit import SignInLimiter

START = datetime.datetime(2026, 12, 4, 8, 0, tzinfo=datetime.timezone.utc)


def at(seconds: float) -> datetime.datetime:
    return START + datetime.timedelta(seconds=seconds)


def test_user_limited_after_five_failures() -> None:
    limiter = SignInLimiter()
    for second in range(4):
        limiter.record_failure("officer-li", f"10.0.0.{second}", now=at(second))
    assert limiter.retry_at("officer-li", "10.0.0.9", now=at(10)) is None

    limiter.record_failure("officer-li", "10.0.0.4", now=at(4))

    assert limiter.retry_at("officer-li", "10.0.0.9", now=at(10)) == at(300)
    assert limiter.retry_at("reviewer-wang", "10.0.0.9", now=at(10)) is None
    assert limiter.retry_at("officer-li", "10.0.0.9", now=at(300)) is None


def test_address_limited_across_users() -> None:
    limiter = SignInLimiter()
    for number in range(20):
        limiter.record_failure(f"user-{number}", "192.0.2.7", now=at(number))

    assert limiter.retry_at("someone-else", "192.0.2.7", now=at(30)) == at(300)
    assert limiter.retry_at("someone-else", "192.0.2.8", now=at(30)) is None
    assert limiter.retry_at("someone-else", "192.0.2.7", now=at(300)) is None


def test_success_clears_user_not_address() -> None:
    limiter = SignInLimiter(max_failures_per_user=2, max_failures_per_address=3)
    limiter.record_failure("officer-li", "192.0.2.7", now=at(0))
    limiter.record_failure("officer-li", "192.0.2.7", now=at(1))
    limiter.record_success("officer-li")

    assert limiter.retry_at("officer-li", "192.0.2.8", now=at(2)) is None
    limiter.record_failure("officer-li", "192.0.2.7", now=at(3))
    assert limiter.retry_at("officer-li", "192.0.2.7", now=at(4)) == at(300)


def test_old_keys_pruned() -> None:
    limiter = SignInLimiter()
    for number in range(1001):
        limiter.record_failure(f"user-{number}", "192.0.2.7", now=at(0))

    limiter.record_failure("late", "192.0.2.9", now=at(400))

    assert set(limiter._failures) == {("user", "late"), ("address", "192.0.2.9")}
