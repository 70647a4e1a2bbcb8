"""Own messages in the terminal UI, and what the runtime says about their delivery.

An own message shows its state in place at the end of its last line: "…" while pending,
"✓ 0.4 ms" once delivered (the slowest peer's round trip), "✗ failed after 30.0 s —
/resend 7" when given up, "… resent" while a resend is on its way.

Rules:
- A message keeps one number for the user, its own in this UI (1, 2, 3, ...), whatever
  ids the runtime gives its sends: /resend sends again under a new runtime id, which
  maps to the same message, the same number and the same line.
- The runtime does not say whom a message went to, so a message expects the peers
  present when it was sent; when the runtime has nothing pending, one delivered to fewer
  has reached everyone it was sent to.
- A failure counts until the message is resent: failed and not resent is exit status 1.
- The newest `_OWN_REMEMBERED` own messages are kept (state, and text for /resend).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

from prompt_toolkit.formatted_text import StyleAndTextTuples

from ..protocol import Address, DeliveryFailed, MessageDelivered, MessageHeld, RawMessageSent
from .format import describe, duration, escape
from .pane import Entry

_OWN_REMEMBERED = 10_000
"""Own messages whose state (and text, for /resend) is kept."""


class OwnMessage(Entry):
    """A message we sent; its last row ends with its delivery state, kept current."""

    def __init__(
        self,
        number: int,
        text: str,
        fragments: StyleAndTextTuples,
        indent: int,
        peers: int,
        room: str = "",
    ) -> None:
        super().__init__(fragments, indent)
        self.number = number
        """The message's number for the user (not the runtime's id)."""
        self.text = text
        self.room = room
        """The room it was said in; "" for a direct message."""
        self.expected = max(1, peers)
        """Peers present when it was sent; the runtime does not say whom it went to."""
        self.delivered: dict[Address, float] = {}
        self.failed: dict[Address | None, float] = {}
        self.complete = False
        """Set when the runtime has nothing pending: no further delivery will come."""
        self.resent = False
        self.raw = False
        """Sent to a plain text peer, which cannot acknowledge: no ✓ and no failure."""
        self.held = ""
        """Why it waits in the outbox for a peer that is away ("" when it does not)."""
        self.cancelled = False
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
        return (
            bool(self.failed)
            or self.raw
            or self.cancelled
            or self.complete
            or len(self.delivered) >= self.expected
        )

    def _render_marker(self) -> StyleAndTextTuples:
        if self.raw:
            return [("", "  "), ("class:state.pending", "sent (raw peer, no receipt)")]
        if self.cancelled:
            return [("", "  "), ("class:state.failed", "cancelled")]
        delivered = len(self.delivered)
        if self.held and not delivered and not self.failed:
            return [("", "  "), ("class:state.pending", f"queued: {self.held} — /queue")]
        if self.failed:
            text = f"✗ failed after {max(self.failed.values()):.1f} s — /resend {self.number}"
            if delivered:
                text = f"✓ {delivered} · {text}"
            return [("", "  "), ("class:state.failed", text)]
        if not delivered:
            return [("", "  "), ("class:state.pending", "… resent" if self.resent else "…")]
        slowest = duration(max(self.delivered.values()))
        if not self.settled:
            return [("", "  "), ("class:state.pending", f"… ✓ {delivered} of {self.expected}")]
        text = f"✓ {slowest}" if delivered == 1 else f"✓ {delivered} peers · {slowest}"
        return [("", "  "), ("class:state.delivered", text)]


class Deliveries:
    """Own messages by number and by runtime id, kept current with the runtime's events."""

    def __init__(self) -> None:
        self._numbered: OrderedDict[int, OwnMessage] = OrderedDict()
        self._by_id: dict[int, OwnMessage] = {}
        """Runtime id -> message; a resent message has one id per send."""
        self._ids: dict[int, list[int]] = {}
        """Number -> the runtime ids of its sends, to forget them with the message."""
        self._unsettled: dict[int, OwnMessage] = {}
        self._next_number = 1
        self.unresolved: set[int] = set()
        """Numbers of failed messages not resent: they make the exit status 1."""

    def add(
        self,
        message_id: int,
        text: str,
        fragments: StyleAndTextTuples,
        indent: int,
        peers: int,
        room: str = "",
    ) -> OwnMessage:
        """Track a message the runtime just took as `message_id` (forgetting the oldest
        past `_OWN_REMEMBERED`); returns it, numbered for the user."""
        own = OwnMessage(self._next_number, text, fragments, indent, peers, room)
        self._next_number += 1
        self._numbered[own.number] = self._unsettled[own.number] = own
        self._by_id[message_id] = own
        self._ids[own.number] = [message_id]
        if len(self._numbered) > _OWN_REMEMBERED:
            number, _ = self._numbered.popitem(last=False)
            for forgotten in self._ids.pop(number):
                del self._by_id[forgotten]
        return own

    def get(self, number: int) -> OwnMessage | None:
        """The own message numbered `number`, if it is still remembered."""
        return self._numbered.get(number)

    def delivered(self, event: MessageDelivered) -> None:
        """One peer has the message."""
        own = self._by_id.get(event.message_id)
        if own is not None:
            own.delivered[event.peer] = event.elapsed
            own.changed()

    def text(self, message_id: int) -> str | None:
        """The text of our message `message_id`, if it is still remembered."""
        own = self._by_id.get(message_id)
        return None if own is None else own.text

    def held(self, event: MessageHeld) -> bool:
        """The message waits for a peer that is away; False if it is not one of ours
        in this run (sent again from the outbox at start)."""
        own = self._by_id.get(event.message_id)
        if own is None:
            return False
        own.held = escape(event.reason)
        own.changed()
        return True

    def cancelled(self, event: DeliveryFailed) -> None:
        """The user took the message out of the outbox: not a failure."""
        own = self._by_id.get(event.message_id)
        if own is not None:
            own.cancelled = True
            own.changed()

    def raw_sent(self, event: RawMessageSent) -> None:
        """The message went to a plain text peer: nothing more will be known of it."""
        own = self._by_id.get(event.message_id)
        if own is not None:
            own.raw = True
            own.changed()

    def failed(self, event: DeliveryFailed) -> str:
        """The runtime gave up on the message (for one peer, or all): record it, and
        return the line that tells the user, with the message's number."""
        own = self._by_id.get(event.message_id)
        if own is None:  # forgotten long ago: the runtime's id is all there is
            self.unresolved.add(event.message_id)
            return describe(event) or ""
        self.unresolved.add(own.number)
        own.failed[event.peer] = event.elapsed
        own.changed()
        renumbered = dataclasses.replace(event, message_id=own.number)
        return f"{describe(renumbered, {own.number: own.text})} — /resend {own.number}"

    def resent(self, own: OwnMessage, message_id: int) -> None:
        """`own` failed and the runtime took it again as `message_id`: it is pending again,
        under the same number, and no longer counts as failed."""
        self._by_id[message_id] = own
        self._ids[own.number].append(message_id)
        own.failed.clear()
        own.complete = False
        own.resent = True
        own.changed()
        self._unsettled[own.number] = own
        self.unresolved.discard(own.number)

    def settle(self, pending: int) -> None:
        """After anything that may have changed the runtime, given its pending count."""
        if pending == 0:
            # No delivery is outstanding, so a message delivered to fewer peers than were
            # present has reached everyone it was sent to.
            for own in self._unsettled.values():
                if own.delivered:
                    own.complete = True
                    own.changed()
        for number in [key for key, own in self._unsettled.items() if own.settled]:
            del self._unsettled[number]
