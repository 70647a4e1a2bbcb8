"""Own messages in the terminal UI, and what the runtime says about their delivery.

An own message shows its state in place at the end of its last line: "…" while pending,
"✓ 0.4 ms" once delivered (the slowest peer's round trip), "✗ failed after 30.0 s —
/resend 7" when given up, ", resent as 8" once resent.

Rules:
- The runtime does not say whom a message went to, so a message expects the peers
  present when it was sent; when the runtime has nothing pending, one delivered to fewer
  has reached everyone it was sent to.
- A failure counts until the message is resent: failed and not resent is exit status 1.
- The newest `_OWN_REMEMBERED` own messages are kept (state, and text for /resend).
"""

from __future__ import annotations

from collections import OrderedDict

from prompt_toolkit.formatted_text import StyleAndTextTuples

from ..protocol import Address, DeliveryFailed, MessageDelivered
from .format import duration
from .pane import Entry

_OWN_REMEMBERED = 10_000
"""Own messages whose state (and text, for /resend) is kept."""


class OwnMessage(Entry):
    """A message we sent; its last row ends with its delivery state, kept current."""

    def __init__(
        self, message_id: int, text: str, fragments: StyleAndTextTuples, indent: int, peers: int
    ) -> None:
        super().__init__(fragments, indent)
        self.message_id = message_id
        self.text = text
        self.expected = max(1, peers)
        """Peers present when it was sent; the runtime does not say whom it went to."""
        self.delivered: dict[Address, float] = {}
        self.failed: dict[Address | None, float] = {}
        self.complete = False
        """Set when the runtime has nothing pending: no further delivery will come."""
        self.resent_as: int | None = None
        self._marker = self._render_marker()

    def row(self, index: int) -> StyleAndTextTuples:
        row = self.rows[index]
        return row + self._marker if index == len(self.rows) - 1 else row

    def changed(self) -> None:
        self._marker = self._render_marker()
        super().changed()

    @property
    def settled(self) -> bool:
        """Nothing more will change: it failed, or every expected peer has it."""
        return bool(self.failed) or self.complete or len(self.delivered) >= self.expected

    def _render_marker(self) -> StyleAndTextTuples:
        delivered = len(self.delivered)
        if self.failed:
            after = f"failed after {max(self.failed.values()):.1f} s"
            if self.resent_as is not None:
                text = f"✗ {after}, resent as {self.resent_as}"
            else:
                text = f"✗ {after} — /resend {self.message_id}"
            if delivered:
                text = f"✓ {delivered} · {text}"
            return [("", "  "), ("class:state.failed", text)]
        if not delivered:
            return [("", "  "), ("class:state.pending", "…")]
        slowest = duration(max(self.delivered.values()))
        if not self.settled:
            return [("", "  "), ("class:state.pending", f"… ✓ {delivered} of {self.expected}")]
        text = f"✓ {slowest}" if delivered == 1 else f"✓ {delivered} peers · {slowest}"
        return [("", "  "), ("class:state.delivered", text)]


class Deliveries:
    """Own messages by id, kept current with the runtime's delivery events."""

    def __init__(self) -> None:
        self._own: OrderedDict[int, OwnMessage] = OrderedDict()
        self._unsettled: dict[int, OwnMessage] = {}
        self.unresolved: set[int] = set()
        """Failed messages not resent: they make the exit status 1."""

    def add(self, own: OwnMessage) -> None:
        """Track a message just sent (forgetting the oldest past `_OWN_REMEMBERED`)."""
        self._own[own.message_id] = self._unsettled[own.message_id] = own
        if len(self._own) > _OWN_REMEMBERED:
            self._own.popitem(last=False)

    def get(self, message_id: int) -> OwnMessage | None:
        """The own message `message_id`, if it is still remembered."""
        return self._own.get(message_id)

    def delivered(self, event: MessageDelivered) -> None:
        """One peer has the message."""
        own = self._own.get(event.message_id)
        if own is not None:
            own.delivered[event.peer] = event.elapsed
            own.changed()

    def failed(self, event: DeliveryFailed) -> OwnMessage | None:
        """The runtime gave up on the message (for one peer, or all); returns it if known."""
        self.unresolved.add(event.message_id)
        own = self._own.get(event.message_id)
        if own is not None:
            own.failed[event.peer] = event.elapsed
            own.changed()
        return own

    def resent(self, own: OwnMessage, new_id: int) -> None:
        """`own` failed and was sent again as `new_id`: it no longer counts as failed."""
        own.resent_as = new_id
        own.changed()
        self.unresolved.discard(own.message_id)

    def settle(self, pending: int) -> None:
        """After anything that may have changed the runtime, given its pending count."""
        if pending == 0:
            # No delivery is outstanding, so a message delivered to fewer peers than were
            # present has reached everyone it was sent to.
            for own in self._unsettled.values():
                if own.delivered:
                    own.complete = True
                    own.changed()
        for message_id in [key for key, own in self._unsettled.items() if own.settled]:
            del self._unsettled[message_id]
