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
    bye: bool = False
    """True when it left saying BYE: what still waits for it will never be delivered."""
    nick: str = ""
    """Its nickname, for the reason given when messages to it fail."""
    session: bytes = b""
    """Its session id when present: what shared-key mode seals our datagrams to it for."""
    rooms: tuple[str, ...] | None = None
    """The rooms it is in, when this note brings news of them (else None)."""
    announced: bool = False
    """It announces itself on our LAN (see `AnnouncedNote`)."""
    instance: bytes = b""
    """Its instance id, once its HELLO or ANNOUNCE carried one (b"": not known)."""


@dataclass(frozen=True, slots=True)
class AddressNote:
    """The peer known as `peer` was last heard from `address`, which is not `peer`: send
    to it there from now on (one session is one peer, whatever address it uses)."""

    peer: Address
    address: Address


@dataclass(frozen=True, slots=True)
class FarewellNote:
    """What the receive half has received of each peer's stream, for the BYEs of a
    closing session: (peer, the peer's session id, cumulative, selective)."""

    acks: tuple[tuple[Address, bytes, int, int], ...]


@dataclass(frozen=True, slots=True)
class RefusedNote:
    """`peer` said it cannot authenticate our datagrams, for `reason`."""

    peer: Address
    reason: RejectReason


@dataclass(frozen=True, slots=True)
class AnnouncedNote:
    """`peer` announces itself on our LAN: its announcements keep it present, so it
    needs no keepalive PINGs."""

    peer: Address


@dataclass(frozen=True, slots=True)
class RoomsNote:
    """`peer`, present, is in `rooms` now (a MEMBERSHIP message, or a HELLO of a peer
    whose rooms we knew)."""

    peer: Address
    rooms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IntroducedNote:
    """`peer` says these are the other members of `room` it knows: greet those we do
    not know (docs/protocol.md, "Rooms")."""

    peer: Address
    room: str
    members: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class RawPeerNote:
    """`peer` is a plain text peer whose text is in `encoding`: replies to it go as plain
    text in that encoding."""

    peer: Address
    encoding: str


@dataclass(frozen=True, slots=True)
class IpmsgPeerNote:
    """An IP Messenger user is present at `peer` (or gone, `present` False): how to
    write to it, and whether to answer its BR_ENTRY with an ANSENTRY."""

    peer: Address
    present: bool
    nick: str
    utf8: bool = False
    """It advertised CAPUTF8OPT: write to it in UTF-8, with UTF8OPT."""
    encoding: str = ""
    """Else the encoding it reads."""
    answer_entry: bool = False


@dataclass(frozen=True, slots=True)
class IpmsgAnswerNote:
    """`peer` sent the message numbered `number`: answer RECVMSG (`received`) and
    READMSG (`read`, a sealed message, shown at once)."""

    peer: Address
    number: int
    received: bool
    read: bool


@dataclass(frozen=True, slots=True)
class IpmsgAckNote:
    """`peer` sent RECVMSG for our packet `number`."""

    peer: Address
    number: int


Note = (
    AckNote
    | PongNote
    | PeerNote
    | RefusedNote
    | AddressNote
    | FarewellNote
    | AnnouncedNote
    | RoomsNote
    | IntroducedNote
    | RawPeerNote
    | IpmsgPeerNote
    | IpmsgAnswerNote
    | IpmsgAckNote
)
