"""The retry loop: what it retries, how long it waits, and the log fields it keeps.

The attempts here are plain functions raising what the client raises; no network.
"""

import logging

import httpx
import pytest

from platforge.errors import RegistryError, TransportError
from platforge.registry.retry import RetryableStatusError, RetryPolicy, retry_call

POLICY = RetryPolicy(attempts=3, base=0.1, max_delay=5.0, max_total=10.0)


def _failing(*errors):
    """An attempt raising ``errors`` in turn, then answering "ok"."""
    pending = list(errors)

    def attempt():
        if pending:
            raise pending.pop(0)
        return "ok"

    return attempt


def test_each_wait_is_logged_with_operation_reason_and_delay(caplog):
    waits = []
    attempt = _failing(
        RetryableStatusError("busy", status=503, retry_after=None),
        httpx.ConnectError("refused"),
    )
    with caplog.at_level(logging.DEBUG, logger="platforge.registry.retry"):
        assert retry_call(attempt, POLICY, "push blob x to r/a", sleep=waits.append)

    records = [r for r in caplog.records if r.name == "platforge.registry.retry"]
    fields = [(r.operation, r.reason, r.delay) for r in records]
    assert fields == [
        ("push blob x to r/a", "HTTP 503", waits[0]),
        ("push blob x to r/a", "ConnectError", waits[1]),
    ]
    assert all(isinstance(r.delay, float) for r in records)


def test_retry_after_sets_the_logged_delay(caplog):
    waits = []
    attempt = _failing(RetryableStatusError("slow", status=429, retry_after=2.0))
    with caplog.at_level(logging.DEBUG, logger="platforge.registry.retry"):
        retry_call(attempt, POLICY, "pull manifest v1", sleep=waits.append)
    assert waits == [2.0]
    assert [r.delay for r in caplog.records] == [2.0]


def test_after_the_last_try_the_error_names_the_operation_and_tries():
    attempt = _failing(
        *[RetryableStatusError("down", status=502, retry_after=None)] * 3
    )
    with pytest.raises(RegistryError, match=r"pull manifest v1 failed after 3 tries"):
        retry_call(attempt, POLICY, "pull manifest v1", sleep=lambda _: None)
    attempt = _failing(*[httpx.ReadTimeout("slow")] * 3)
    with pytest.raises(TransportError, match="ReadTimeout"):
        retry_call(attempt, POLICY, "pull manifest v1", sleep=lambda _: None)


def test_each_wait_is_logged_at_info_so_the_cli_shows_it(caplog):
    attempt = _failing(RetryableStatusError("busy", status=503, retry_after=None))
    with caplog.at_level(logging.INFO, logger="platforge.registry.retry"):
        retry_call(attempt, POLICY, "push blob x to r/a", sleep=lambda _: None)
    [record] = [r for r in caplog.records if r.name == "platforge.registry.retry"]
    assert record.levelno == logging.INFO
    assert (record.operation, record.reason) == ("push blob x to r/a", "HTTP 503")
    assert "push blob x to r/a: HTTP 503, retrying in " in record.getMessage()


def test_a_rate_limit_outlasting_the_tries_says_to_wait_or_log_in():
    limited = RetryableStatusError("limited", status=429, retry_after=1.0)
    attempt = _failing(*[limited] * 3)
    with pytest.raises(RegistryError) as caught:
        retry_call(attempt, POLICY, "pull manifest v1", sleep=lambda _: None)
    assert str(caught.value) == (
        "pull manifest v1 failed after 3 tries: limited; the registry's rate limit "
        "did not reset within 3 tries (2 s): wait and retry, or log in for a "
        "higher limit"
    )
    assert caught.value.status == 429


def test_a_failing_registry_after_the_tries_says_to_check_it_or_retry_later():
    attempt = _failing(
        *[RetryableStatusError("down", status=502, retry_after=None)] * 3
    )
    with pytest.raises(RegistryError) as caught:
        retry_call(attempt, POLICY, "pull manifest v1", sleep=lambda _: None)
    assert str(caught.value).endswith(
        ": down; the registry is failing: check its logs or retry later"
    )
