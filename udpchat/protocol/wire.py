"""Encoding and decoding of udpchat datagrams (docs/protocol.md, "Wire format").

Every datagram is one self-contained record: a 12-byte common header followed by a
kind-specific body. `decode` turns bytes into one of the frozen records below or raises
`WireError` (and nothing else) with a short reason; `encode` is its exact inverse.
Nothing here keeps state: ordering, acks and retransmission live in `sender` and
`receiver`.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Any, NamedTuple

from .errors import RejectReason, WireError
from .rooms import check_rooms

__all__ = [
    "ANNOUNCE_PERIOD",
    "DISCOVERY_GROUP",
    "DISCOVERY_GROUP6",
    "DISCOVERY_PORT",
    "FIRST_FRAGMENT_OVERHEAD",
    "HEADER",
    "HELLO_MIN_SIZE",
    "KEY_BYTES",
    "MAGIC",
    "MAX_DATAGRAM",
    "MAX_FRAGMENTS",
    "MAX_MESSAGE_BYTES",
    "MAX_NICK_BYTES",
    "REFUSAL_CODES",
    "REFUSED_SIZE",
    "VERSION",
    "Ack",
    "Announce",
    "Bye",
    "Conversation",
    "Data",
    "Datagram",
    "Hello",
    "Kind",
    "Ping",
    "Pong",
    "Refused",
    "decode",
    "encode",
    "encode_rooms",
    "with_base",
]

# "Every datagram starts with the two bytes `UC` (0x55 0x43) and the version byte 0x03."
MAGIC = b"UC"
VERSION = 3
# "No datagram is longer than 1200 bytes", so one crosses any LAN without IP fragmentation.
MAX_DATAGRAM = 1200
# "A message's text is at most 65,536 bytes of UTF-8."
MAX_MESSAGE_BYTES = 65536
MAX_NICK_BYTES = 32
# "A HELLO that asks for a reply is padded to at least 64 bytes": the reply is never
# larger than the request, so udpchat cannot be used to amplify traffic.
HELLO_MIN_SIZE = 64

# magic, version, kind, session id
HEADER = struct.Struct("!2sBB8s")
_DATA = struct.Struct("!QQHH")  # seq, base, fragment index, fragment count
_FIRST = struct.Struct("!Q16sB")  # sent-at (ms since the Unix epoch), message key, nick length
_ACK = struct.Struct("!8sQQQ")  # acknowledged session, cumulative, selective, duplicate
_TOKEN = struct.Struct("!Q")
_PING = struct.Struct("!QQ")  # token, base
_BYE_ACK = struct.Struct("!8sQQ")  # acknowledged session, cumulative, selective
_HELLO = struct.Struct("!B8sB")  # flags, instance id, nick length
_ROOMS = struct.Struct("!IB")  # membership version, room count
_CONVERSATION = struct.Struct("!BB")  # conversation kind, room name length
_ANNOUNCE = struct.Struct("!8sB")  # instance id, nick length

# "Discovery: ANNOUNCE datagrams go to the multicast group 239.255.77.77 (IPv6: ff02::7777,
# link-local) and to the broadcast address 255.255.255.255, all on UDP port 21277."
DISCOVERY_GROUP = "239.255.77.77"
DISCOVERY_GROUP6 = "ff02::7777"
DISCOVERY_PORT = 21277
# "Steady state: one ANNOUNCE every 60 s."
ANNOUNCE_PERIOD = 60.0

DATA_HEADER_SIZE = HEADER.size + _DATA.size
FIRST_FRAGMENT_OVERHEAD = _FIRST.size + _CONVERSATION.size
"""Bytes a first fragment adds, besides the nickname and the room name."""
# Text bytes a non-first fragment can carry.
FRAGMENT_PAYLOAD = MAX_DATAGRAM - DATA_HEADER_SIZE
# Upper bound on fragments of one message: the first carries the least text.
MAX_FRAGMENTS = 1 + -(-MAX_MESSAGE_BYTES // FRAGMENT_PAYLOAD)

KEY_BYTES = 16
"""A message key: the sender's instance id, then 8 bytes it never uses for another."""

HELLO_WANTS_REPLY = 0x01
HELLO_ROOMS_FOLLOW = 0x02


class Kind(IntEnum):
    """The datagram kinds of protocol version 3."""

    HELLO = 1
    """Announce a nickname; may ask the receiver to answer with its own HELLO."""
    BYE = 2
    """The sender is leaving."""
    PING = 3
    """Liveness and round-trip probe; answered by a PONG with the same token."""
    PONG = 4
    """Answer to a PING."""
    DATA = 5
    """One fragment of a chat message; reliable and ordered."""
    ACK = 6
    """Cumulative and selective acknowledgement of DATA."""
    SEALED = 7
    """Any of the above, encrypted and authenticated (shared-key mode, `crypto`)."""
    REFUSED = 8
    """"Your datagram failed my shared-key checks", and why; always plain text, so that a
    peer with another key (or none) can read it."""
    ANNOUNCE = 9
    """"I am here": sent to the discovery group and broadcast address, never answered in
    kind; a receiver that does not know the sender greets it with a unicast HELLO."""


class Conversation(IntEnum):
    """What a message (the first fragment of a DATA) belongs to."""

    DIRECT = 0
    """A direct message, to this receiver alone; no room name."""
    ROOM = 1
    """A line said in the named room, sent to each of its members."""
    MEMBERSHIP = 2
    """Control: the sender's rooms (`rooms.encode_membership`); no room name."""
    ROSTER = 3
    """Control: other members of the named room (`rooms.encode_roster`)."""


class Hello(NamedTuple):
    session: bytes
    """Sender's 8-byte session id."""
    nick: str
    """Sender's nickname, 1 to 32 bytes of UTF-8."""
    wants_reply: bool = False
    """True when the receiver should answer with a HELLO of its own."""
    rooms_version: int = 0
    """Counts the sender's joins and leaves: a receiver keeps the newest room list it
    has seen of a session, whichever way (HELLO or MEMBERSHIP) it came."""
    rooms: tuple[str, ...] = ()
    """The rooms the sender is in."""
    rooms_follow: bool = False
    """The rooms did not fit (a reply is never larger than what it answers): they
    follow in a MEMBERSHIP message, and `rooms` is empty."""
    instance: bytes = bytes(8)
    """Sender's 8-byte instance id, as in ANNOUNCE (eight zero bytes: none)."""


class Announce(NamedTuple):
    session: bytes
    """Sender's session id."""
    instance: bytes
    """Sender's 8-byte instance id: the same for every run of one installation."""
    nick: str
    """Sender's nickname, 1 to 32 bytes of UTF-8."""
    rooms_version: int = 0
    """As in HELLO."""
    rooms: tuple[str, ...] = ()
    """The rooms the sender is in, as in HELLO."""


class Bye(NamedTuple):
    session: bytes
    """Session id of the leaving sender."""
    acked_session: bytes = b""
    """Empty for a bare BYE. Otherwise the BYE also acknowledges, as an ACK would, the
    stream of this session to the leaving sender: the last ACK before a BYE may be lost,
    and the peer must not report as failed what the leaving side did receive."""
    cumulative: int = 0
    """As in ACK, when `acked_session` is set."""
    selective: int = 0
    """As in ACK, when `acked_session` is set."""


class Ping(NamedTuple):
    session: bytes
    """Sender's session id."""
    token: int
    """Opaque 64-bit value echoed in the PONG."""
    base: int = 0
    """The sender's base for the stream to the receiver, as in DATA: a gap the sender gave
    up on is skipped even when no DATA follows it."""


class Pong(NamedTuple):
    session: bytes
    """Sender's session id (the one answering)."""
    token: int
    """The token of the PING being answered."""


class Data(NamedTuple):
    session: bytes
    """Sender's session id."""
    seq: int
    """Sequence number of this datagram in the stream from sender to this receiver."""
    base: int
    """Lowest seq the sender still retransmits; the receiver skips any gap below it."""
    fragment_index: int
    """Position of this fragment in its message, from 0."""
    fragment_count: int
    """Number of fragments of the message, 1 to MAX_FRAGMENTS."""
    payload: bytes
    """This fragment's slice of the UTF-8 text."""
    sent_at_ms: int = 0
    """First fragment only: when the message was sent, ms since the Unix epoch."""
    nick: str = ""
    """First fragment only: the sender's nickname."""
    conversation: Conversation = Conversation.DIRECT
    """First fragment only: what the message belongs to."""
    room: str = ""
    """First fragment only: the room, for ROOM and ROSTER; else empty."""
    key: bytes = bytes(KEY_BYTES)
    """First fragment only: the message key, the same in every copy of the message
    sent to anyone, also from a later run of the sender (all zero: none)."""


class Ack(NamedTuple):
    session: bytes
    """Acknowledging receiver's session id."""
    acked_session: bytes
    """Session id of the DATA sender being acknowledged."""
    cumulative: int
    """Every seq below this has been received (the next seq expected)."""
    selective: int
    """Bit i set: seq cumulative + 1 + i has been received too."""
    duplicate: int = 0
    """One more than the highest seq received again since the previous ACK, or 0: tells
    the sender that a datagram it resent had arrived after all (only late)."""


class Refused(NamedTuple):
    session: bytes
    """Session id of the receiver that refused a datagram."""
    reason: RejectReason
    """Which shared-key check it failed: one of `REFUSAL_CODES`."""


REFUSAL_CODES = {
    RejectReason.AUTHENTICATION_FAILED: 1,
    RejectReason.NOT_SEALED: 2,
    RejectReason.SEALED_WITHOUT_KEY: 3,
    RejectReason.CLOCK_SKEW: 4,
}
"""The reasons a REFUSED datagram can carry, and their byte on the wire."""
_REFUSAL_REASONS = {code: reason for reason, code in REFUSAL_CODES.items()}
REFUSED_SIZE = HEADER.size + 1


Datagram = Hello | Bye | Ping | Pong | Data | Ack | Refused | Announce


def _header(kind: Kind, session: bytes) -> bytes:
    return HEADER.pack(MAGIC, VERSION, kind, session)


def _nick_bytes(nick: str) -> bytes:
    raw = nick.encode("utf-8")
    if not 1 <= len(raw) <= MAX_NICK_BYTES:
        raise ValueError(f"nickname must be 1 to {MAX_NICK_BYTES} bytes of UTF-8")
    return raw


def encode(datagram: Datagram) -> bytes:
    """Return the bytes of one datagram. Raises ValueError for a record no peer could read."""
    if len(datagram.session) != 8:
        raise ValueError("session id must be 8 bytes")
    if isinstance(datagram, Data):
        head = _header(Kind.DATA, datagram.session) + _DATA.pack(
            datagram.seq, datagram.base, datagram.fragment_index, datagram.fragment_count
        )
        if datagram.fragment_index == 0:
            nick = _nick_bytes(datagram.nick)
            room = datagram.room.encode("utf-8")
            if bool(room) != (datagram.conversation in _ROOM_KINDS):
                raise ValueError("ROOM and ROSTER name a room; the others do not")
            if len(datagram.key) != KEY_BYTES:
                raise ValueError("message key must be 16 bytes")
            head += _FIRST.pack(datagram.sent_at_ms, datagram.key, len(nick)) + nick
            head += _CONVERSATION.pack(datagram.conversation, len(room)) + room
        out = head + datagram.payload
        if len(out) > MAX_DATAGRAM:
            raise ValueError("DATA datagram longer than 1200 bytes")
        return out
    if isinstance(datagram, Ack):
        return _header(Kind.ACK, datagram.session) + _ACK.pack(
            datagram.acked_session, datagram.cumulative, datagram.selective, datagram.duplicate
        )
    if isinstance(datagram, Refused):
        return _header(Kind.REFUSED, datagram.session) + bytes((REFUSAL_CODES[datagram.reason],))
    if isinstance(datagram, Ping):
        return _header(Kind.PING, datagram.session) + _PING.pack(datagram.token, datagram.base)
    if isinstance(datagram, Pong):
        return _header(Kind.PONG, datagram.session) + _TOKEN.pack(datagram.token)
    if isinstance(datagram, Announce):
        if len(datagram.instance) != 8:
            raise ValueError("instance id must be 8 bytes")
        nick = _nick_bytes(datagram.nick)
        head = _header(Kind.ANNOUNCE, datagram.session)
        out = head + _ANNOUNCE.pack(datagram.instance, len(nick)) + nick
        out += encode_rooms(datagram.rooms_version, datagram.rooms)
        # Padded as a HELLO that asks for a reply is: the HELLO that answers an
        # announcement is never larger than it.
        return out + bytes(max(0, HELLO_MIN_SIZE - len(out)))
    if isinstance(datagram, Hello):
        nick = _nick_bytes(datagram.nick)
        flags = HELLO_WANTS_REPLY if datagram.wants_reply else 0
        if datagram.rooms_follow:
            flags |= HELLO_ROOMS_FOLLOW
        if len(datagram.instance) != 8:
            raise ValueError("instance id must be 8 bytes")
        out = _header(Kind.HELLO, datagram.session)
        out += _HELLO.pack(flags, datagram.instance, len(nick)) + nick
        out += encode_rooms(datagram.rooms_version, datagram.rooms)
        if datagram.wants_reply and len(out) < HELLO_MIN_SIZE:
            out += bytes(HELLO_MIN_SIZE - len(out))
        return out
    bye = _header(Kind.BYE, datagram.session)
    if datagram.acked_session:
        if len(datagram.acked_session) != 8:
            raise ValueError("acknowledged session id must be 8 bytes")
        bye += _BYE_ACK.pack(datagram.acked_session, datagram.cumulative, datagram.selective)
    return bye


_ROOM_KINDS = (Conversation.ROOM, Conversation.ROSTER)
_CONVERSATIONS = tuple(Conversation)
"""By their byte: indexing a tuple costs a tenth of calling the enum."""
_ROOM_NAMES: dict[bytes, str] = {}
"""Room names already checked, by their bytes: every first fragment carries one, and a
chat sees few. Bounded (cleared when full), since the bytes come from the network."""
_ROOM_NAMES_KEPT = 256


def _room_name(raw: bytes) -> str:
    """A DATA's room name field, checked (WireError unless a room name or tag)."""
    name = _ROOM_NAMES.get(raw)
    if name is None:
        try:
            name = check_rooms((raw.decode("utf-8"),))[0]
        except UnicodeDecodeError:
            raise WireError(RejectReason.BAD_VALUE, "room name") from None
        if len(_ROOM_NAMES) >= _ROOM_NAMES_KEPT:
            _ROOM_NAMES.clear()
        _ROOM_NAMES[raw] = name
    return name


def encode_rooms(version: int, rooms: tuple[str, ...]) -> bytes:
    """HELLO's room list: version, count, then each name after its length."""
    out = _ROOMS.pack(version, len(rooms))
    for room in rooms:
        raw = room.encode("utf-8")
        out += bytes((len(raw),)) + raw
    return out


_BASE_AT = HEADER.size + 8
"""Where `base` sits in an encoded DATA datagram: after the header and the seq."""
_U64 = struct.Struct("!Q")


def with_base(data: bytes, base: int) -> bytes:
    """An encoded DATA datagram with its base field set to `base`; the sender encodes a
    fragment once and writes the current base in at each transmission."""
    return data[:_BASE_AT] + _U64.pack(base) + data[_BASE_AT + 8 :]


def _decode_nick(raw: bytes) -> str:
    if not 1 <= len(raw) <= MAX_NICK_BYTES:
        raise WireError(RejectReason.BAD_NICK, "length")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError(RejectReason.BAD_NICK, "not UTF-8") from None


def decode(data: bytes) -> Datagram:
    """Parse one datagram. Raises WireError, and only WireError, on anything malformed."""
    size = len(data)
    if size < HEADER.size:
        raise WireError(
            RejectReason.TRUNCATED_HEADER if data[:2] == MAGIC else RejectReason.NOT_UDPCHAT
        )
    magic, version, kind, session = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireError(RejectReason.NOT_UDPCHAT)
    if version != VERSION:
        raise WireError(RejectReason.UNSUPPORTED_VERSION, str(version))
    if size > MAX_DATAGRAM:
        raise WireError(RejectReason.TOO_LONG)
    at = HEADER.size
    if kind == Kind.DATA:
        return _decode_data(session, data, at)
    if kind == Kind.ACK:
        if size - at != _ACK.size:
            raise WireError(RejectReason.BAD_LENGTH, "ACK")
        return Ack(session, *_ACK.unpack_from(data, at))
    if kind == Kind.PING:
        if size - at != _PING.size:
            raise WireError(RejectReason.BAD_LENGTH, "PING")
        return Ping(session, *_PING.unpack_from(data, at))
    if kind == Kind.PONG:
        if size - at != _TOKEN.size:
            raise WireError(RejectReason.BAD_LENGTH, "PONG")
        return Pong(session, *_TOKEN.unpack_from(data, at))
    if kind == Kind.HELLO:
        (flags, instance, nick_len), nick = _fields_then_nick(_HELLO, data, at, "HELLO")
        version, rooms = _decode_rooms(data, at + _HELLO.size + nick_len, "HELLO")
        follow = bool(flags & HELLO_ROOMS_FOLLOW)
        if follow and rooms:
            raise WireError(RejectReason.BAD_VALUE, "HELLO rooms")
        wants_reply = bool(flags & HELLO_WANTS_REPLY)
        return Hello(session, nick, wants_reply, version, rooms, follow, instance)
    if kind == Kind.BYE:
        if size == at:
            return Bye(session)
        if size - at != _BYE_ACK.size:
            raise WireError(RejectReason.BAD_LENGTH, "BYE")
        return Bye(session, *_BYE_ACK.unpack_from(data, at))
    if kind == Kind.REFUSED:
        if size != REFUSED_SIZE:
            raise WireError(RejectReason.BAD_LENGTH, "REFUSED")
        reason = _REFUSAL_REASONS.get(data[at])
        if reason is None:
            raise WireError(RejectReason.BAD_VALUE, "REFUSED reason")
        return Refused(session, reason)
    if kind == Kind.ANNOUNCE:
        (instance, nick_len), nick = _fields_then_nick(_ANNOUNCE, data, at, "ANNOUNCE")
        version, rooms = _decode_rooms(data, at + _ANNOUNCE.size + nick_len, "ANNOUNCE")
        return Announce(session, instance, nick, version, rooms)
    if kind == Kind.SEALED:
        raise WireError(RejectReason.SEALED_WITHOUT_KEY)
    raise WireError(RejectReason.UNKNOWN_KIND, str(kind))


def _fields_then_nick(
    fields: struct.Struct, data: bytes, at: int, kind: str
) -> tuple[tuple[Any, ...], str]:
    """HELLO and ANNOUNCE: fixed `fields` ending in the nick length, the nickname, then
    padding, which is ignored."""
    if len(data) - at < fields.size:
        raise WireError(RejectReason.TRUNCATED, kind)
    values = fields.unpack_from(data, at)
    at += fields.size
    nick_len = values[-1]
    if len(data) < at + nick_len:
        raise WireError(RejectReason.TRUNCATED, kind)
    return values, _decode_nick(data[at : at + nick_len])


def _decode_rooms(data: bytes, at: int, kind: str) -> tuple[int, tuple[str, ...]]:
    if len(data) - at < _ROOMS.size:
        raise WireError(RejectReason.TRUNCATED, kind)
    version, count = _ROOMS.unpack_from(data, at)
    at += _ROOMS.size
    rooms = []
    for _ in range(count):
        size = data[at] if at < len(data) else 0
        raw = data[at + 1 : at + 1 + size]
        if not size or len(raw) != size:
            raise WireError(RejectReason.TRUNCATED, f"{kind} rooms")
        try:
            rooms.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise WireError(RejectReason.BAD_VALUE, "room name") from None
        at += 1 + size
    return version, check_rooms(tuple(rooms))


def _decode_data(session: bytes, data: bytes, at: int) -> Data:
    if len(data) - at < _DATA.size:
        raise WireError(RejectReason.TRUNCATED, "DATA")
    seq, base, index, count = _DATA.unpack_from(data, at)
    if not 1 <= count <= MAX_FRAGMENTS or index >= count:
        raise WireError(RejectReason.BAD_FRAGMENT)
    if base > seq:
        raise WireError(RejectReason.BASE_ABOVE_SEQ)
    at += _DATA.size
    if index:
        return Data(session, seq, base, index, count, data[at:])
    if len(data) - at < _FIRST.size:
        raise WireError(RejectReason.TRUNCATED, "DATA")
    sent_at_ms, key, nick_len = _FIRST.unpack_from(data, at)
    at += _FIRST.size
    if len(data) < at + nick_len:
        raise WireError(RejectReason.TRUNCATED, "DATA")
    nick = _decode_nick(data[at : at + nick_len])
    at += nick_len
    # Conversation and room name length, read as two bytes (cheaper than a Struct).
    if len(data) < at + 2:
        raise WireError(RejectReason.TRUNCATED, "DATA")
    kind, room_len = data[at], data[at + 1]
    at += 2
    if kind >= len(_CONVERSATIONS):
        raise WireError(RejectReason.BAD_VALUE, "conversation")
    conversation = _CONVERSATIONS[kind]
    if room_len:
        end = at + room_len
        if conversation not in _ROOM_KINDS:
            raise WireError(RejectReason.BAD_VALUE, "conversation room")
        if len(data) < end:
            raise WireError(RejectReason.TRUNCATED, "DATA")
        room, at = _room_name(data[at:end]), end
    elif conversation in _ROOM_KINDS:
        raise WireError(RejectReason.BAD_VALUE, "conversation room")
    else:
        room = ""
    payload = data[at:]
    return Data(
        session, seq, base, index, count, payload, sent_at_ms, nick, conversation, room, key
    )
