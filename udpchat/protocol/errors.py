"""Exceptions of the protocol core.

Two families, as in h11: `LocalProtocolError` is the caller's misuse (a message that is
too long, a full outbox) and is raised to the caller; `WireError` is the peer's
misbehaviour (a malformed datagram) and never leaves the core: the session catches it,
drops the datagram and counts it.
"""

from __future__ import annotations


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


class WireError(ProtocolError):
    """A datagram could not be decoded; `str(error)` is the short reason."""
