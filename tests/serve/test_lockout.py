"""Wrong API keys per client address: a sliding window, a wait past the limit, bounded memory."""

from __future__ import annotations

import pytest
from serve_fakes import OFFICER_KEY, auth

from serve import lockout
from serve.errors import TooManyAttemptsError
from serve.lockout import FailedAttempts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_waits_after_the_limit_until_the_window_passes() -> None:
    clock = Clock()
    attempts = FailedAttempts(3, window_s=60.0, clock=clock)
    for step in range(3):
        attempts.check("10.0.0.7")
        attempts.failed("10.0.0.7")
        clock.now += 10.0 * (step < 2)
    with pytest.raises(
        TooManyAttemptsError,
        match=r"^3 wrong API keys from this address in the last 60 s; try again in 40 s$",
    ) as info:
        attempts.check("10.0.0.7")
    assert info.value.retry_after_s == 40
    attempts.check("10.0.0.8")  # another address is not held
    clock.now += 40.0  # the first failure leaves the window
    attempts.check("10.0.0.7")


def test_a_limit_of_zero_counts_nothing() -> None:
    attempts = FailedAttempts(0)
    for _ in range(100):
        attempts.failed("a")
    attempts.check("a")


def test_memory_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lockout, "MAX_TRACKED", 5)
    attempts = FailedAttempts(1)
    for n in range(20):
        attempts.failed(f"10.0.0.{n}")
    attempts.check("10.0.0.0")  # forgotten: the longest quiet go first
    with pytest.raises(TooManyAttemptsError):
        attempts.check("10.0.0.19")


def test_wrong_keys_over_http_get_429_then_even_the_right_key_waits(make_client) -> None:
    client = make_client(auth_failures_per_minute=2)
    for _ in range(2):
        assert client.get("/v1/models", headers=auth("wrong-key-123")).status_code == 401
    held = client.get("/v1/models", headers=auth(OFFICER_KEY))
    assert held.status_code == 429
    assert held.json()["type"] == "https://clearsight.dev/problems/too-many-attempts"
    assert 1 <= int(held.headers["retry-after"]) <= 60
    page = client.post("/review/login", data={"key": OFFICER_KEY}, follow_redirects=False)
    assert page.status_code == 429 and "Too many wrong keys" in page.text


def test_the_lockout_can_be_turned_off(make_client) -> None:
    client = make_client(auth_failures_per_minute=0)
    for _ in range(30):
        assert client.get("/v1/models", headers=auth("wrong-key-123")).status_code == 401
    assert client.get("/v1/models", headers=auth(OFFICER_KEY)).status_code == 200
