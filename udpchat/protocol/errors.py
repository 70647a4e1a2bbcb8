"""Exceptions of the protocol core, and the reasons a datagram is dropped.

Two families, as in h11: `LocalProtocolError` is the caller's misuse (a message that is
too long, a full outbox, a bad nickname) and is raised to the caller; `WireError` is the
peer's misbehaviour (a malformed datagram) and never leaves the core: the receive half
catches it, drops the datagram and counts it under its `RejectReason`.
"""

from __future__ import annotations

from enum import Enum


class ProtocolError(Exception):
    """Base class of every error the core raises."""


class LocalProtocolError(ProtocolError):
    """The caller asked for something the protocol cannot do."""


class MessageTooLong(LocalProtocolError):
    """A message's UTF-8 text is longer than the protocol carries (65,536 bytes)."""


class OutboxFull(LocalProtocolError):
    """Too many messages are waiting for delivery; try again when some are delivered."""


class NoPeers(LocalProtocolError):
    """There is no peer to send to."""


class InvalidNick(LocalProtocolError, ValueError):
    """A nickname the protocol cannot carry or a terminal could not show safely."""


class InvalidRoom(LocalProtocolError, ValueError):
    """A room name that breaks the rule of `rooms.validate_room`."""


class Counter(Enum):
    """Which `Stats` counter a dropped datagram adds to."""

    FOREIGN = "foreign_dropped"
    """Not udpchat at all."""
    MALFORMED = "malformed_dropped"
    """udpchat, but broken."""
    AUTHENTICATION = "auth_failed"
    """Shared-key mode mismatches."""
    CROWDED = "window_dropped"
    """No room: the peer table, or the share of it one host may take."""


class RejectReason(Enum):
    """Why the core dropped a datagram. The value is the text people are shown."""

    NOT_UDPCHAT = "not udpchat"
    """It does not start with the magic `UC`: another program's traffic."""
    TRUNCATED_HEADER = "truncated header"
    """The magic, then less than a whole header."""
    UNSUPPORTED_VERSION = "unsupported version"
    """A protocol version this program does not speak."""
    TOO_LONG = "datagram longer than 1200 bytes"
    """Over the protocol's datagram size limit."""
    UNKNOWN_KIND = "unknown kind"
    """A kind byte this version does not define."""
    BAD_LENGTH = "bad length"
    """A fixed-size body of the wrong size."""
    TRUNCATED = "truncated"
    """A body cut short before the end of its fields."""
    BAD_NICK = "bad nickname"
    """A nickname of 0 or over 32 bytes, or not UTF-8."""
    BAD_FRAGMENT = "bad fragment index or count"
    """A fragment index not below its count, or a count out of range."""
    BASE_ABOVE_SEQ = "base above seq"
    """A DATA whose base lies above its own seq."""
    BAD_VALUE = "bad value"
    """A field holding a value it may not hold."""
    MESSAGE_CUT_SHORT = "message cut short by a new one"
    """A first fragment arrived while an earlier message was incomplete."""
    FRAGMENTS_OUT_OF_ORDER = "fragments out of order"
    """Fragments in seq order do not follow each other in the message."""
    MESSAGE_TOO_LONG = "message longer than 65536 bytes"
    """The fragments add up to more than a message may hold."""
    TEXT_NOT_UTF8 = "message text is not UTF-8"
    """A reassembled message that does not decode."""
    OWN_SESSION = "our own datagram, sent back to us"
    """It carries this chat's own session id: reflected by the network or by someone
    else; a chat is never its own peer."""
    SEALED_WITHOUT_KEY = "encrypted, and this chat has no key"
    """A sealed datagram reached a chat that has no shared key."""
    NOT_SEALED = "not encrypted"
    """A plain udpchat datagram reached a chat that has a shared key."""
    AUTHENTICATION_FAILED = "authentication failed"
    """Forged, altered, or sealed with another key."""
    REPLAYED = "replayed"
    """A sealed datagram accepted before."""
    NOT_FOR_ANYONE = "sealed for anyone, and not a HELLO or ANNOUNCE"
    """Only a HELLO may be sealed without naming its recipient."""
    CLOCK_SKEW = "timestamp outside the allowed clock skew"
    """Stamped too far from our clock: an old replay, or clocks that disagree."""
    TOO_MANY_AT_HOST = "too many peers at one address"
    """A new session from an IP address that already has `max_peers_per_host` present
    peers: one program making up peers from many ports."""

    @property
    def counter(self) -> Counter:
        if self is RejectReason.NOT_UDPCHAT:
            return Counter.FOREIGN
        if self in _AUTHENTICATION:
            return Counter.AUTHENTICATION
        if self is RejectReason.TOO_MANY_AT_HOST:
            return Counter.CROWDED
        return Counter.MALFORMED


_AUTHENTICATION = frozenset(
    {
        RejectReason.SEALED_WITHOUT_KEY,
        RejectReason.NOT_SEALED,
        RejectReason.AUTHENTICATION_FAILED,
        RejectReason.REPLAYED,
        RejectReason.NOT_FOR_ANYONE,
        RejectReason.CLOCK_SKEW,
    }
)


class WireError(ProtocolError):
    """A datagram could not be decoded or did not follow the protocol's rules."""

    def __init__(self, reason: RejectReason, detail: str = "") -> None:
        self.reason = reason
        """What is wrong, as one of a fixed set."""
        self.detail = detail
        """More about it for people ("HELLO", "version 2"), or ""."""
        super().__init__(f"{reason.value} ({detail})" if detail else reason.value)


class AuthenticationError(WireError):
    """A sealed datagram that failed the checks of shared-key mode; raised only by the
    opener (`crypto.Opener.open`), so a malformed but authentic datagram is never counted
    as an authentication failure."""
