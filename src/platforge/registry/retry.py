"""Retrying registry requests that failed for reasons that may pass.

Registries and the proxies in front of them fail transiently: a 503 while a node
restarts, a 429 when a rate limit is hit, a connection reset. Those requests are
retried with exponential backoff and full jitter (so parallel uploads do not retry in
lock step), honouring ``Retry-After`` when the server sends it, within a bounded total
wait. Statuses retried: 408, 429 and every 5xx. Never retried: 400, 401, 403, 404 and
the other 4xx, which mean the request itself is wrong and would fail again.

The caller passes a function that performs one whole attempt, so a request body that
streams from a file is reopened from the start on every attempt.

Each wait is logged at INFO on ``platforge.registry.retry`` (a user waiting up to
half a minute should see why; the CLI prints INFO as plain lines) with structured
fields that callers may rely on (the Concourse resource turns them into its stderr
lines; the message wording is free to change, these are not):

- ``operation`` (str): what was attempted, as in the final error
  ("push blob sha256:… to 127.0.0.1:5000/app");
- ``reason`` (str): why it is retried, ``HTTP 503`` or an httpx error class name;
- ``delay`` (float): the seconds waited before the next attempt.

After the last try the error says what to do about the last failure: for 429, wait
or log in (registries give authenticated users higher limits); for 5xx, the
registry itself is failing.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import httpx

from platforge.errors import RegistryError, TransportError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "RETRYABLE_STATUSES",
    "RetryPolicy",
    "RetryableStatusError",
    "retry_call",
    "without_source_position",
]

log = logging.getLogger("platforge.registry.retry")

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

T = TypeVar("T")


class RetryableStatusError(RegistryError):
    """Raised by an attempt whose response status is worth retrying."""

    def __init__(self, message: str, *, status: int, retry_after: float | None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or 500 <= status < 600


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry.

    ``attempts`` counts the first try. Delays grow as ``base * 2**n`` capped at
    ``max_delay``, drawn uniformly from [0, that] (full jitter); a ``Retry-After`` is
    obeyed as given but capped at ``max_delay``. The sum of all waits never exceeds
    ``max_total``: past it, the last error is raised.
    """

    attempts: int = 5
    base: float = 0.25
    max_delay: float = 10.0
    max_total: float = 30.0

    def backoff(self, attempt: int) -> float:
        ceiling = min(self.max_delay, self.base * (2**attempt))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not security


def retry_call(
    attempt: Callable[[], T],
    policy: RetryPolicy,
    describe: str,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``attempt`` until it succeeds, retrying transient failures per ``policy``.

    ``describe`` names the operation ("push blob sha256:… to 127.0.0.1:5000/app") for
    the error raised after the last try.
    """
    waited = 0.0
    for number in range(policy.attempts):
        try:
            return attempt()
        except RetryableStatusError as exc:
            last: Exception = exc
            delay = policy.backoff(number)
            if exc.retry_after is not None:
                delay = min(exc.retry_after, policy.max_delay)
            reason = f"HTTP {exc.status}"
        except httpx.TransportError as exc:
            last = exc
            delay = policy.backoff(number)
            reason = type(exc).__name__
        final = number + 1 >= policy.attempts or waited + delay > policy.max_total
        if final:
            break
        log.info(
            "%s: %s, retrying in %.1f s",
            describe,
            reason,
            delay,
            extra={"operation": describe, "reason": reason, "delay": delay},
        )
        sleep(delay)
        waited += delay

    tries = number + 1
    if isinstance(last, RetryableStatusError):
        advice = _status_advice(last.status, tries, waited)
        raise RegistryError(
            f"{describe} failed after {tries} tries: {last}; {advice}",
            status=last.status,
        ) from last
    raise TransportError(
        f"{describe} failed after {tries} tries: {_describe_transport(last)}; "
        "check that the registry is running and reachable"
    ) from last


def _status_advice(status: int | None, tries: int, waited: float) -> str:
    """What to do once a retryable status outlasted every try."""
    if status == 429:
        return (
            f"the registry's rate limit did not reset within {tries} tries "
            f"({waited:.0f} s): wait and retry, or log in for a higher limit"
        )
    if status == 408:
        return "the registry timed the request out each time: retry later"
    return "the registry is failing: check its logs or retry later"


# CPython's ssl errors end with the C source position, "(_ssl.c:1006)": noise to a
# user, and it changes with every Python build.
_SOURCE_POSITION = re.compile(r"\s*\(_ssl\.c:\d+\)")


def without_source_position(text: str) -> str:
    """``text`` without CPython's ``(_ssl.c:NNNN)`` source positions."""
    return _SOURCE_POSITION.sub("", text)


def _describe_transport(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = without_source_position(text)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
