"""Rooms: the one rule for room names, and the two control messages that carry
membership (docs/protocol.md, "Rooms").

A room name is 1 to 24 bytes of UTF-8, letters, digits, `-`, `_` and `.` only, kept in
lower case: `#Lobby` and `lobby` are one room. A chat is in at most `MAX_ROOMS` rooms.

MEMBERSHIP (a DATA message of conversation kind 2) says which rooms its sender is in:
its text is the membership version, then one room name per line. ROSTER (kind 3) names
the other members of one room its sender knows: one `host port` per line. Both are
plain text so that a capture reads as what it means; both are parsed here, strictly, and
anything else is a `WireError`.
"""

from __future__ import annotations

from .errors import InvalidRoom, RejectReason, WireError
from .events import Address

MAX_ROOM_BYTES = 24
TAG_PREFIX = "~"
"""A keyed room is listed on the wire as `~` and 20 hex digits: its tag for the
listing session (`crypto.RoomKey.tag`), which only holders of the room's key can
compute or check. `~` cannot start a room name, so the two never meet."""
_TAG_DIGITS = frozenset("0123456789abcdef")
ROOM_OVERHEAD = 12 + 16
"""Bytes sealing adds to a keyed room's line: the random nonce and the AEAD tag."""
MAX_ROOMS = 8
"""Rooms one chat is in at once; a peer claiming more is dropped."""
MAX_ROSTER = 64
"""Addresses one ROSTER carries; a room's other members past this are left out (they
find each other through the members they do learn)."""
DEFAULT_ROOM = "lobby"
_PUNCTUATION = frozenset("-_.")


def validate_room(name: str) -> str:
    """`name` as a room is known (one leading `#` dropped, lower case), or InvalidRoom
    with a one-line reason."""
    name = name.strip()
    if name.startswith("#"):
        name = name[1:]
    name = name.lower()
    if not name:
        raise InvalidRoom("a room name cannot be empty")
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_ROOM_BYTES:
        raise InvalidRoom(f"a room name is at most {MAX_ROOM_BYTES} bytes of UTF-8, not {size}")
    for char in name:
        if not (char.isalnum() or char in _PUNCTUATION):
            raise InvalidRoom(
                f"a room name holds letters, digits, '-', '_' and '.' only, not {char!r}"
            )
    return name


def is_room(name: str) -> bool:
    """Whether `name` is a room name as the wire carries it (already validated)."""
    try:
        return validate_room(name) == name
    except InvalidRoom:
        return False


def is_tag(name: str) -> bool:
    """Whether `name` is a keyed room's tag as the wire carries it."""
    return (
        len(name) == 21 and name.startswith(TAG_PREFIX) and all(c in _TAG_DIGITS for c in name[1:])
    )


def check_rooms(rooms: tuple[str, ...]) -> tuple[str, ...]:
    """Rooms received from a peer: WireError unless each is a valid name or tag, once,
    and there are at most MAX_ROOMS."""
    if len(rooms) > MAX_ROOMS or len(set(rooms)) != len(rooms):
        raise WireError(RejectReason.BAD_VALUE, "rooms")
    if not all(is_room(room) or is_tag(room) for room in rooms):
        raise WireError(RejectReason.BAD_VALUE, "room name")
    return rooms


def room_associated_data(sender: bytes, recipient: bytes, tag: str, seq: int) -> bytes:
    """What a keyed room's line is bound to (`crypto.RoomKey.seal`): who sent it, to
    whom, as which member's tag, and at which seq of the stream, so that it opens
    nowhere else."""
    return sender + recipient + tag.encode("ascii") + seq.to_bytes(8, "big")


def encode_membership(version: int, rooms: tuple[str, ...]) -> str:
    return "\n".join((str(version), *rooms))


def decode_membership(text: str) -> tuple[int, tuple[str, ...]]:
    """(version, rooms) of a MEMBERSHIP message; WireError if it is not one."""
    first, *rooms = text.split("\n")
    if not first.isdigit() or len(first) > 10:
        raise WireError(RejectReason.BAD_VALUE, "membership version")
    return int(first), check_rooms(tuple(rooms))


def encode_roster(members: list[Address]) -> str:
    return "\n".join(f"{host} {port}" for host, port in members[:MAX_ROSTER])


def decode_roster(text: str) -> list[Address]:
    """The addresses of a ROSTER message; WireError if it is not one."""
    members: list[Address] = []
    lines = text.split("\n") if text else []
    if len(lines) > MAX_ROSTER:
        raise WireError(RejectReason.BAD_VALUE, "roster length")
    for line in lines:
        host, _, port = line.partition(" ")
        if not host or len(host) > 64 or not port.isdigit() or not 0 < int(port) < 65536:
            raise WireError(RejectReason.BAD_VALUE, "roster address")
        if not all(c.isalnum() or c in ".:%-_" for c in host):
            raise WireError(RejectReason.BAD_VALUE, "roster address")
        members.append((host, int(port)))
    return members
