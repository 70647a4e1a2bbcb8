"""What the receive half tells the send half.

In the thread and asyncio models both halves live in one `ChatSession` and a note is a
method call away; in the process model they live in different processes and notes cross
a pipe, so they are small frozen dataclasses that pickle.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import RejectReason
from .events import Address


@dataclass(frozen=True, slots=True)
class AckNote:
    """An ACK for our session arrived from `peer`."""

    peer: Address
    cumulative: int
    selective: int
    duplicate: int = 0
    """One more than a seq the peer received twice, or 0 (see `wire.Ack.duplicate`)."""


@dataclass(frozen=True, slots=True)
class PongNote:
    """A PONG arrived from `peer`, answering the PING with `token`."""

    peer: Address
    token: int


@dataclass(frozen=True, slots=True)
class PeerNote:
    """A peer became present or absent, or wants our HELLO."""

    peer: Address
    present: bool
    """True once the peer is known (joined or restarted), False when it left."""
    send_hello: bool = False
    """True when the peer does not know our nickname yet: answer with a HELLO."""


@dataclass(frozen=True, slots=True)
class RefusedNote:
    """`peer` said it cannot authenticate our datagrams, for `reason`."""

    peer: Address
    reason: RejectReason


Note = AckNote | PongNote | PeerNote | RefusedNote
