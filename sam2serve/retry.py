"""When a 503 is sent again: the policy a client is given, and the decisions of one call under
it. Both clients share it; no I/O happens here (the clients sleep the delays themselves)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sam2serve.errors import APIError, ServiceUnavailableError


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep retrying a 503 (no free slot, a session being rebuilt).

    The server says when to come back in ``Retry-After``; the client waits that long (at most
    ``max_delay_s``, ``default_delay_s`` without the header), up to ``max_attempts`` requests
    in all and ``max_wait_s`` of waiting in all, then raises the last 503's error."""

    max_attempts: int = 6
    max_wait_s: float = 120.0
    default_delay_s: float = 2.0
    max_delay_s: float = 30.0

    def delay_s(
        self, attempt: int, waited_s: float, error: ServiceUnavailableError
    ) -> float | None:
        """Seconds to wait before request ``attempt + 1``; None: give up and raise."""
        if attempt >= self.max_attempts:
            return None
        delay = error.retry_after_s if error.retry_after_s is not None else self.default_delay_s
        delay = min(max(delay, 0.0), self.max_delay_s)
        return delay if waited_s + delay <= self.max_wait_s else None


NO_RETRY = RetryPolicy(max_attempts=1)
# Told about each retry before its wait: the 503's error and the seconds about to be waited.
OnRetry = Callable[[ServiceUnavailableError, float], None]


class Retries:
    """The retry decisions of one call: after each error answer, how long to wait before the
    next attempt, or the error raised when it is not a 503 or the policy gives up."""

    def __init__(self, policy: RetryPolicy, on_retry: OnRetry | None) -> None:
        self.policy = policy
        self.on_retry = on_retry
        self.attempt = 1
        self.waited_s = 0.0

    def delay_after(self, error: APIError) -> float:
        """Seconds to wait before trying again; raises ``error`` when not to."""
        if not isinstance(error, ServiceUnavailableError):
            raise error
        delay = self.policy.delay_s(self.attempt, self.waited_s, error)
        if delay is None:
            raise error
        if self.on_retry is not None:
            self.on_retry(error, delay)
        self.attempt += 1
        self.waited_s += delay
        return delay
