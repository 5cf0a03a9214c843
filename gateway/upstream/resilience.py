"""Upstream resilience: a retry budget, backoff with jitter, and a circuit breaker.

All three protect the upstream and the callers from each other when Clearout
flaps.  Retries hide a blip from the caller, but only for calls that cannot
charge twice (see `gateway.upstream`), only inside the caller's own time,
and only while the `RetryBudget` allows: retries may add at most a fraction
of live traffic, so a storm of failures is not multiplied into a storm of
retries.  The `CircuitBreaker` notices a dead upstream (consecutive failures)
and answers at once instead of letting every caller wait out its timeout;
after a pause it lets a single probe through (half-open) and closes again on
its success.  Both are per replica and in process: they react to what this
replica sees, which is what a breaker is for.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Literal

from gateway.errors import UpstreamCircuitOpen

BreakerState = Literal["closed", "open", "half_open"]

# Backoff: full jitter over an exponentially growing cap (AWS architecture
# blog's "full jitter"), so retrying replicas spread out instead of waking
# in lock step.
BACKOFF_BASE_SECONDS = 0.05
BACKOFF_MAX_SECONDS = 1.0


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1 for the first retry)."""
    cap = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
    return (rng or random).uniform(0, cap)


@dataclass
class RetryBudget:
    """Retries allowed as a fraction of calls, plus a small floor per second.

    Each call deposits `ratio` of a token, time deposits `floor_per_second`,
    and a retry withdraws a whole one; the balance starts at ten seconds'
    worth of the floor and is capped, so a quiet hour cannot save up a burst.
    With ratio 0.1, retries add at most ~10% to what the upstream sees (plus
    the floor), however badly it is failing.
    """

    ratio: float = 0.1
    floor_per_second: float = 1.0
    cap: float = 20.0
    _tokens: float = -1.0  # set from the floor in __post_init__
    _stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self._tokens < 0:
            self._tokens = min(self.cap, 10 * self.floor_per_second)

    def record_call(self) -> None:
        self._refill()
        self._tokens = min(self.cap, self._tokens + self.ratio)

    def try_spend(self) -> bool:
        self._refill()
        # Ten deposits of 0.1 make 0.9999999999999999 in floating point.
        if self._tokens >= 1.0 - 1e-9:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.cap, self._tokens + (now - self._stamp) * self.floor_per_second)
        self._stamp = now


@dataclass
class CircuitBreaker:
    """Closed → open after `threshold` consecutive failures → half-open after `open_seconds`.

    Half-open admits one probe at a time; its success closes the breaker,
    its failure opens it again for another `open_seconds`.  `threshold` 0
    turns the breaker off.
    """

    threshold: int = 5
    open_seconds: float = 10.0
    state: BreakerState = "closed"
    _failures: int = 0
    _opened_at: float = 0.0
    _probing: bool = False

    def admit(self) -> bool:
        """Whether a call may go now; True marks it as the probe when half-open.

        Raises UpstreamCircuitOpen when it may not.
        """
        if self.threshold <= 0 or self.state == "closed":
            return False
        now = time.monotonic()
        if self.state == "open" and now - self._opened_at >= self.open_seconds:
            self.state = "half_open"
        if self.state == "half_open" and not self._probing:
            self._probing = True
            return True
        raise UpstreamCircuitOpen(
            "Clearout is failing; the gateway is not sending lookups for a moment",
            headers={"Retry-After": str(self.retry_after(now))},
        )

    def retry_after(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        return max(1, math.ceil(self.open_seconds - (now - self._opened_at)))

    def succeeded(self, probe: bool) -> None:
        self._failures = 0
        if probe or self.state != "closed":
            self.state = "closed"
            self._probing = False

    def failed(self, probe: bool) -> None:
        if self.threshold <= 0:
            return
        self._failures += 1
        if probe or self.state == "half_open" or self._failures >= self.threshold:
            self.state = "open"
            self._opened_at = time.monotonic()
            self._probing = False

    def abandoned(self, probe: bool) -> None:
        """A probe that ended without telling (cancelled): let the next call probe."""
        if probe:
            self._probing = False

    @property
    def is_open(self) -> bool:
        """Open or half-open: what the `upstream_circuit_open` gauge shows."""
        return self.state != "closed"
