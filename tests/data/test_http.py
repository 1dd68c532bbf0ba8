"""Retrying HTTP: backoff, Retry-After, giving up, redaction. No test sleeps for real."""

from __future__ import annotations

import random
import time

import pytest

from imgae_dx.data.sources import http

pytestmark = pytest.mark.timeout(60)


class _Clock:
    """Time that passes only when the code under test sleeps (``http.time`` and the policy's
    ``sleep``)."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class _Top(random.Random):
    """Jitter that always draws the top of its interval, so a delay equals its cap."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr(http, "time", c)
    return c


def _fails_then_ok(*errors: Exception):
    """A call that raises each of ``errors`` in turn, then returns ``"ok"``."""
    left = list(errors)

    def fn() -> str:
        if left:
            raise left.pop(0)
        return "ok"

    return fn


def _policy(clock: _Clock, rng: random.Random, max_retries: int = 8) -> http.RetryPolicy:
    return http.RetryPolicy(
        max_retries=max_retries, backoff_base=0.5, max_backoff=4.0, sleep=clock.sleep, rng=rng
    )


def test_backoff_doubles_up_to_max_backoff(clock):
    policy = _policy(clock, _Top())
    fn = _fails_then_ok(*[http.HTTPStatusError(503, "http://h/x")] * 6)
    assert http.call(fn, policy, "thing") == "ok"
    assert clock.slept == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0] and policy.retries == 6


def test_backoff_is_full_jitter_above_zero_and_below_the_cap(clock):
    policy = _policy(clock, random.Random(0))
    fn = _fails_then_ok(*[http.TransferError("short body")] * 8)
    assert http.call(fn, policy, "thing") == "ok"
    caps = [min(4.0, 0.5 * 2**attempt) for attempt in range(8)]
    assert len(clock.slept) == 8
    assert all(0 < delay <= cap for delay, cap in zip(clock.slept, caps))


def test_retry_after_is_waited_in_full(clock):
    policy = _policy(clock, _Top())
    throttled = http.HTTPStatusError(429, "http://h/x", retry_after=7.0)  # > max_backoff
    assert http.call(_fails_then_ok(throttled), policy, "thing") == "ok"
    assert clock.slept == [7.0 + 0.05]  # plus a tenth of backoff(0): no thundering herd


def test_retry_after_holds_back_every_worker(clock):
    policy = _policy(clock, _Top())
    others = []

    def sleep(seconds: float) -> None:
        if not others:  # while the throttled worker waits, another one starts a request
            others.append("started")
            assert http.call(lambda: "ok", policy, "another worker") == "ok"
        clock.sleep(seconds)

    policy.sleep = sleep
    throttled = http.HTTPStatusError(429, "http://h/x", retry_after=7.0)
    assert http.call(_fails_then_ok(throttled), policy, "thing") == "ok"
    assert clock.slept == [7.0, 7.0 + 0.05]  # the other worker waited for the server too


def test_retry_after_parsing():
    assert http.retry_after_seconds("3") == 3.0
    assert http.retry_after_seconds(None) is None and http.retry_after_seconds("soon") is None
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= http.retry_after_seconds(date) <= 31


def test_call_gives_up_clearly_and_refuses_long_waits(clock):
    policy = http.RetryPolicy(max_retries=2, max_backoff=0.001, sleep=clock.sleep)
    n = []

    def always_500():
        n.append(1)
        raise http.HTTPStatusError(500, "http://h/x?X-Goog-Signature=SECRET")

    with pytest.raises(http.RetriesExhausted, match=r"after 3 attempt\(s\).*HTTP 500") as ei:
        http.call(always_500, policy, "thing")
    assert len(n) == 3 and "SECRET" not in str(ei.value)

    def throttled():
        raise http.HTTPStatusError(429, "http://h/x", retry_after=7200)

    with pytest.raises(http.RetriesExhausted, match="7200 s"):
        http.call(throttled, policy, "thing")

    def not_found():
        raise http.HTTPStatusError(404, "http://h/x")

    with pytest.raises(http.HTTPStatusError):
        http.call(not_found, policy, "thing")


def test_redaction():
    http.register_secret("s3cr3t-token-value")
    msg = "GET https://user:pw@storage.example/a/b.zip?X-Goog-Signature=abc&x=1 with s3cr3t-token-value"
    out = http.redact(msg)
    assert "abc" not in out and "s3cr3t" not in out and "pw@" not in out
    assert (
        http.public_url("https://u:p@h.example:8443/a/b.zip?sig=1#f")
        == "https://h.example:8443/a/b.zip"
    )
