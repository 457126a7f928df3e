"""Limits on failed password sign-ins, per user name and per client address.

A user name with ``max_failures_per_user`` failed sign-ins within ``window``, or a client address with
``max_failures_per_address``, is rejected (HTTP 429) until the oldest of those failures leaves the window.
The address limit is higher than the user limit because one address can be a whole office behind NAT.
The counters live in the agent's memory, so they start again from zero when the agent restarts.
"""

from __future__ import annotations

import collections
import datetime
import threading
from dataclasses import dataclass, field

__all__ = ["SignInLimiter"]

#: Keys with no failure in the window are dropped once the table contains more keys than this.
_PRUNE_ABOVE_KEYS = 1000


@dataclass
class SignInLimiter:
    """Sliding-window counters of failed sign-ins, keyed by user name and by client address."""

    max_failures_per_user: int = 5
    max_failures_per_address: int = 20
    window: datetime.timedelta = datetime.timedelta(minutes=5)
    _failures: dict[tuple[str, str], collections.deque[datetime.datetime]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _keys(self, user: str, address: str) -> list[tuple[tuple[str, str], int]]:
        return [(("user", user), self.max_failures_per_user), (("address", address), self.max_failures_per_address)]

    def _recent(self, key: tuple[str, str], now: datetime.datetime) -> collections.deque[datetime.datetime]:
        times = self._failures.get(key, collections.deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_at(self, user: str, address: str, now: datetime.datetime | None = None) -> datetime.datetime | None:
        """Return when ``user`` from ``address`` may try again, or ``None`` when a sign-in may be tried now."""
        now = now or datetime.datetime.now(datetime.timezone.utc)
        blocked_until = None
        with self._lock:
            for key, limit in self._keys(user, address):
                times = self._recent(key, now)
                if len(times) >= limit:
                    # The attempt becomes possible when enough failures have left the window.
                    until = times[len(times) - limit] + self.window
                    blocked_until = max(blocked_until or until, until)
        return blocked_until

    def record_failure(self, user: str, address: str, now: datetime.datetime | None = None) -> None:
        """Count one failed sign-in for ``user`` and for ``address``."""
        now = now or datetime.datetime.now(datetime.timezone.utc)
        with self._lock:
            if len(self._failures) > _PRUNE_ABOVE_KEYS:
                for key in [key for key in self._failures if not self._recent(key, now)]:
                    del self._failures[key]
            for key, _ in self._keys(user, address):
                self._failures.setdefault(key, collections.deque()).append(now)

    def record_success(self, user: str) -> None:
        """Clear the failures of ``user``. The address keeps its count, so one good account cannot reset it."""
        with self._lock:
            self._failures.pop(("user", user), None)
