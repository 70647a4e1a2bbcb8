"""Events the core hands to its caller through `next_event()`, and the one a runtime
adds (`SendFailed`: the core never touches a socket).

Each is a frozen, slotted dataclass named for something that has happened. They hold
only plain values so they pickle: the process model sends them through pipes.
"""

from __future__ import annotations

from dataclasses import dataclass

Address = tuple[str, int]
"""A peer's address as (host, port); the core treats it as an opaque key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerJoined:
    peer: Address
    """Where the peer sends from."""
    nick: str
    """Its nickname, or "" when its first datagram did not carry one."""
    restarted: bool = False
    """True when an address we knew came back with a new session id."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerLeft:
    peer: Address
    """The peer that left."""
    nick: str
    """Its last known nickname."""
    reason: str
    """"bye" (it said so) or "timed out" (silent for longer than the peer timeout)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerRenamed:
    peer: Address
    """The peer that changed its nickname."""
    old_nick: str
    """The nickname it had."""
    new_nick: str
    """The nickname it has now."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReceived:
    peer: Address
    """The sender's address."""
    nick: str
    """The sender's nickname as carried by the message."""
    text: str
    """The message text, exactly as sent (may hold any Unicode, control characters too)."""
    sent_at_ms: int
    """The sender's wall clock when it sent the message, ms since the Unix epoch."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageDelivered:
    message_id: int
    """The id `send_message` returned."""
    peer: Address
    """The peer that acknowledged every fragment."""
    elapsed: float
    """Seconds from `send_message` to the last acknowledgement."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryFailed:
    message_id: int
    """The id `send_message` returned."""
    peer: Address | None
    """The peer that did not acknowledge it; None when there was no peer to send to (a
    runtime that checks for peers before its core does reports the race this way)."""
    elapsed: float
    """Seconds from `send_message` to giving up."""
    reason: str
    """Why, e.g. "no acknowledgement within 30 s"."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DatagramRejected:
    peer: Address
    """Where the (last) rejected datagram came from."""
    reason: str
    """Why it was dropped, e.g. "not udpchat" or "truncated DATA"."""
    count: int
    """Datagrams dropped since the previous DatagramRejected, this one included."""
    preview: str
    """The start of a non-udpchat datagram decoded as text (UTF-8, else GBK), or ""."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SendFailed:
    peer: Address
    """Where the datagrams were going."""
    reason: str
    """What the operating system said, e.g. "Permission denied" or "Network is
    unreachable"."""
    count: int
    """Datagrams to this peer refused for this reason since the previous SendFailed about
    them, this one included."""


Event = (
    PeerJoined
    | PeerLeft
    | PeerRenamed
    | MessageReceived
    | MessageDelivered
    | DeliveryFailed
    | DatagramRejected
    | SendFailed
)
