"""A circuit breaker around the vector store: after a few failures in a row the serving side stops
waiting on it, answers from memory (or the fallback), and lets one probe through every few seconds
until the store answers again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import TypeVar

T = TypeVar("T")


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpen(RuntimeError):
    """The store failed recently: not called (an outage, not a configuration problem)."""


class CircuitBreaker:
    def __init__(self, name: str, failures: int = 3, reset_s: float = 5.0, clock=time.monotonic):
        self.name = name
        self.failure_threshold = failures
        self.reset_s = reset_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state()

    def _state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.reset_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allows(self) -> bool:
        """Whether a call would go through now (without reserving the probe)."""
        with self._lock:
            state = self._state()
            return state is BreakerState.CLOSED or (state is BreakerState.HALF_OPEN and not self._probing)

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        with self._lock:
            state = self._state()
            if state is BreakerState.OPEN or (state is BreakerState.HALF_OPEN and self._probing):
                raise CircuitOpen(f"{self.name}: circuit open after {self._failures} failures")
            self._probing = state is BreakerState.HALF_OPEN
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            self._record(ok=False)
            raise
        self._record(ok=True)
        return result

    def _record(self, ok: bool) -> None:
        with self._lock:
            self._probing = False
            if ok:
                self._failures, self._opened_at = 0, None
                return
            self._failures += 1
            if self._failures >= self.failure_threshold or self._opened_at is not None:
                self._opened_at = self._clock()  # (re)open; a failed probe restarts the wait
