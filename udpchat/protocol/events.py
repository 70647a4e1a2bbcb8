"""Events the core hands to its caller through `next_event()`, and the ones a runtime
adds (`SendFailed` and `HistoryFailed`: the core never touches a socket or a file).

Each is a frozen, slotted dataclass named for something that has happened. They hold
only plain values so they pickle: the process model sends them through pipes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .errors import RejectReason

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
    rooms: tuple[str, ...] = ()
    """The rooms it is in, as far as known yet (a later `MemberJoined` tells more)."""
    dialect: str = "udpchat"
    """"udpchat", or "ipmsg" for an IP Messenger client (IPMsg, FeiQ, iptux)."""
    group: str = ""
    """An IP Messenger user's group."""
    host: str = ""
    """An IP Messenger user's host name, as it gives it."""
    instance: bytes = b""
    """Its installation's 8-byte instance id when its HELLO carried one: what the
    offline outbox holds messages for."""


class LeaveReason(Enum):
    """Why a peer is no longer present. The value is the text people are shown."""

    BYE = "bye"
    """It said goodbye."""
    TIMED_OUT = "timed out"
    """Nothing was heard from it for longer than the peer timeout."""
    RESTARTED_ELSEWHERE = "restarted at another address"
    """Its installation (instance id) announced a new session from another address: the
    old one is gone (the new one joins on its own)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerLeft:
    peer: Address
    """The peer that left."""
    nick: str
    """Its last known nickname."""
    reason: LeaveReason
    """Why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerRenamed:
    peer: Address
    """The peer that changed its nickname."""
    old_nick: str
    """The nickname it had."""
    new_nick: str
    """The nickname it has now."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberJoined:
    peer: Address
    """The peer, present already, that joined a room (or whose rooms we just learned)."""
    nick: str
    """Its nickname."""
    room: str
    """The room it is in now."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberLeft:
    peer: Address
    """The peer, still present, that left a room."""
    nick: str
    """Its nickname."""
    room: str
    """The room it is no longer in."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionMismatched:
    peer: Address
    """A udpchat that speaks another version of the protocol (reported once per
    address): the two cannot chat."""
    version: int
    """The version byte of its datagrams."""


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
    room: str = ""
    """The room it was said in, or "" for a direct message (to us alone)."""
    dialect: str = "udpchat"
    """"udpchat", "raw" for a plain text peer (nc, socat, a network assistant), or
    "ipmsg" for an IP Messenger client."""
    encoding: str = ""
    """For a raw or IPMsg peer: the encoding its text was read in ("utf-8", "gb18030",
    ...)."""
    key: bytes = b""
    """The message key (docs/protocol.md, DATA): 16 bytes, the sender's instance id and
    8 bytes it never reuses; b"" for raw and IPMsg peers, which carry none."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FileOffered:
    peer: Address
    """The IP Messenger user offering the file."""
    nick: str
    """Its nickname."""
    name: str
    """The file's name as offered."""
    size: int
    """Its size in bytes, as offered. Receiving files is not supported: the offer is
    shown so that it is not lost silently."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageDelivered:
    message_id: int
    """The id `send_message` returned."""
    peer: Address
    """The peer that acknowledged every fragment."""
    elapsed: float
    """Seconds from `send_message` to the last acknowledgement."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageHeld:
    message_id: int
    """The id `send_message` returned."""
    peer: Address | None
    """Where the peer it is for was last reached, or None when it has not been seen in
    this run (a message sent again from the outbox at start)."""
    nick: str
    """That peer's nickname."""
    reason: str
    """Why it waits, e.g. "bob is away" or "bob left"."""
    expires_in: float
    """Seconds until it fails if the peer is not back by then (`Config.keep`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RawMessageSent:
    message_id: int
    """The id `send_message` returned."""
    peer: Address
    """The plain text peer it went to. It cannot acknowledge: this is the message's last
    event, neither delivered nor failed."""
    encoding: str
    """The encoding it was written in."""


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
    """Where the last rejected datagram came from."""
    reason: RejectReason
    """Why the last one was dropped."""
    detail: str = ""
    """More about that reason ("PING" for a PING of the wrong length), or ""."""
    count: int
    """Datagrams dropped since the previous DatagramRejected, this one included."""
    sources: int = 1
    """Distinct addresses they came from (counted up to 1000)."""
    preview: str
    """The start of the last datagram decoded as text (UTF-8, else GBK) when it was not
    udpchat, or ""."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DatagramsRefused:
    peer: Address
    """The address that says it could not authenticate what we sent it."""
    reason: RejectReason
    """Which shared-key check our datagrams failed there (a different key, a key on one
    side only, clocks too far apart)."""


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


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryFailed:
    reason: str
    """Why the history could not be written (one line). History is off for the rest of
    the run; the chat goes on, and "delivered" then means handed to the application."""


Event = (
    PeerJoined
    | PeerLeft
    | PeerRenamed
    | MemberJoined
    | MemberLeft
    | VersionMismatched
    | MessageReceived
    | FileOffered
    | MessageDelivered
    | MessageHeld
    | RawMessageSent
    | DeliveryFailed
    | DatagramRejected
    | DatagramsRefused
    | SendFailed
    | HistoryFailed
)
