"""When to announce ourselves on the LAN (docs/protocol.md, "Discovery").

Rules, after mDNS (RFC 6762, 8.3): announce at once, again 1 s later, then back off,
doubling the interval up to the steady period (60 s by default). The steady interval is
spread by up to ±10 %, derived from the session id, so that chats started together do
not keep announcing in step. The schedule is all this module knows; the send half builds
the datagrams and the runtime chose where they go (`Config.announce_to`).
"""

from __future__ import annotations

START_INTERVALS = (1.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
"""Intervals after the first announcements; then the steady period."""
SPREAD = 0.1
"""The steady interval varies by up to this share either way."""


class Announcer:
    """The announcement schedule of one session. `next_at` is None when it is off."""

    def __init__(self, session: bytes, period: float, enabled: bool) -> None:
        self._session = session
        self._period = period
        self._sent = 0
        self.next_at: float | None = 0.0 if enabled else None
        """When the next announcement is due; 0.0 (at once) before the first."""

    def start(self) -> None:
        """Announce at once, then on the start-up schedule (again, if it ran before)."""
        self._sent = 0
        self.next_at = 0.0

    def due(self, now: float) -> bool:
        """True when an announcement is due at `now`; the next one is then scheduled."""
        if self.next_at is None or now < self.next_at:
            return False
        self.next_at = now + self._interval()
        self._sent += 1
        return True

    def stop(self) -> None:
        self.next_at = None

    def _interval(self) -> float:
        if self._sent < len(START_INTERVALS):
            return min(START_INTERVALS[self._sent], self._period)
        # A byte of the session id, cycling, gives each steady interval its spread.
        byte = self._session[self._sent % len(self._session)]
        return self._period * (1 + SPREAD * (byte - 127.5) / 127.5)
