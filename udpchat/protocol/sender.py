"""The send half of the core: outbox, fragmentation, retransmission, give-up, and the
HELLO and PING probes (docs/protocol.md, "Sending").

Theory of operation. Each peer (a *target*) has its own stream of seq numbers. A message
becomes one *delivery* per target: its fragments get consecutive seqs and wait in the
target's unsent queue. `datagrams_to_send` moves fragments into flight while
`seq < base + send_window`, where base is the lowest seq still in flight. A fragment is
retransmitted when its deadline passes: `sent + rto * 2**backoff`, capped at `max_rto`,
with rto from RFC 6298 over samples of fragments sent once (Karn). As in RFC 6298 (5.5,
5.7) the back-off belongs to the peer, not the fragment: each expiry of the oldest
fragment in flight doubles it, and any acknowledgement of new data resets it. So under
random loss a lost fragment is resent after one rto, while towards a peer that is gone
the resends thin out to one per `max_rto`. A fragment is resent before its timer when
three fragments transmitted after it are acknowledged and it is older than 9/8 of the
round trip plus the peer's reordering window (RFC 9002 6.1.1 and 6.1.2); the window
grows when the receiver reports a copy of such a resend arriving twice (the first was
only late), and halves after 16 resends that draw no such report. Acks (cumulative plus a
64-bit selective map) only ever remove fragments from flight; a duplicate ack triggers
nothing. A delivery
that is not fully acknowledged `give_up_after` seconds after `send_message` fails: its
fragments leave flight, base moves past them, and every later DATA tells the receiver
not to wait for them.
"""

from __future__ import annotations

import heapq
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from . import plain, wire
from .config import Config, Stats
from .discovery import Announcer
from .errors import LocalProtocolError, MessageTooLong, NoPeers, OutboxFull, RejectReason
from .events import (
    Address,
    DeliveryFailed,
    Event,
    MessageDelivered,
    MessageHeld,
    RawMessageSent,
)
from .nick import validate_nick
from .notes import (
    AckNote,
    AddressNote,
    AnnouncedNote,
    FarewellNote,
    IntroducedNote,
    IpmsgAckNote,
    IpmsgAnswerNote,
    IpmsgPeerNote,
    Note,
    PeerNote,
    PongNote,
    RawPeerNote,
    RefusedNote,
    RoomsNote,
)
from .rooms import (
    MAX_ROOMS,
    ROOM_OVERHEAD,
    encode_membership,
    encode_roster,
    room_associated_data,
    validate_room,
)
from .sealing import ANYONE, Outgoing, seal_all

if TYPE_CHECKING:
    from .crypto import RoomKey, Sealer
    from .ipmsg_peers import Outbound as IpmsgOutbound

_PINGS_REMEMBERED = 4
_SHOWN_GRACE = 1.0
"""Seconds at least that a message the peer has whole but holds behind a given-up one
is waited for after its give-up time."""
_HELLO_RETRY_FIRST = 1.0
_LOSS_THRESHOLD = 3
"""A fragment may be lost once this many fragments transmitted after it are acknowledged
(QUIC's packet threshold, RFC 9002 6.1.1)..."""
_TIME_THRESHOLD = 9 / 8
"""...and once it is older than 9/8 of the round trip (RFC 9002 6.1.2's time threshold)
plus the peer's reordering window: only then is it resent, without waiting for its timer."""
_GRANULARITY = 0.001
"""The least time threshold (RFC 9002's kGranularity)."""
_FAST_RESENT_REMEMBERED = 64
"""Fragments resent by the fast path, remembered so a report that the first copy arrived
after all (`AckNote.duplicate`) can widen the reordering window."""
_RESENDS_BEFORE_NARROWING = 16
"""Fast resends without such a report after which the reordering window halves."""
_INTRODUCTION_TRIES = 3
_NO_KEY = bytes(wire.KEY_BYTES)
_KEY_TAIL = struct.Struct("!Q")
_U64 = 0xFFFF_FFFF_FFFF_FFFF
CANCELLED = "cancelled"
"""The reason of the `DeliveryFailed` of a message taken out of the outbox (`cancel`)."""
"""HELLOs sent to an address a ROSTER named before it is given up on."""


@dataclass(slots=True, eq=False)
class _Delivery:
    """One message on its way to one target."""

    message_id: int
    queued_at: float
    deadline: float
    unacked: int
    last_seq: int = 0
    """The seq of its last fragment: it is delivered when the peer's cumulative ACK has
    passed it (a selective ACK only stops retransmission)."""
    waiting: bool = False
    """Past its give-up with every fragment acknowledged: waiting for the peer to show
    it (see `Sender.handle_timer`)."""
    room: str = ""
    """The room a ROOM message was said in."""
    control: bool = False
    """MEMBERSHIP or ROSTER: ours, not the user's, so no delivery events."""
    message: _Message | None = None
    """The user's message, to hold it for a peer that is away (the outbox)."""
    fragments: list[_Fragment] = field(default_factory=list)
    """Its fragments, until it is delivered: a peer that restarts gets again those
    it had only acknowledged selectively."""


@dataclass(slots=True, eq=False)
class _Message:
    """What a user's message is, apart from where it goes: enough to queue it again for
    a peer that restarted, or to hold it for one that is away (the offline outbox)."""

    raw: bytes
    """Its text, UTF-8."""
    sent_at_ms: int
    key: bytes
    """Its message key (docs/protocol.md, DATA): the same in every copy, in every run."""
    conversation: wire.Conversation
    room: str
    expires: float
    """When a direct message held for a peer that is away fails (`Config.keep`)."""


@dataclass(slots=True, eq=False)
class _Held:
    """A direct message waiting for its peer's installation to be present again."""

    message_id: int
    message: _Message
    queued_at: float
    nick: str
    peer: Address | None


@dataclass(slots=True, eq=False)
class _Fragment:
    seq: int
    datagram: bytes
    """Encoded with base 0; the real base is written in at each transmission."""
    delivery: _Delivery
    sent_at: float = 0.0
    first_sent_at: float = 0.0
    transmissions: int = 0
    retransmit_at: float = 0.0
    order: int = 0
    """When it was last transmitted, counted in transmissions to its target."""


@dataclass(slots=True, eq=False)
class _Target:
    configured: bool
    active: bool
    """Included in new messages: configured peers always, learned ones while present."""
    addr: Address
    """Where its datagrams go: where the peer was last heard from (its key in
    `Sender._targets` is the address it is known by)."""
    session: bytes = ANYONE
    """The peer's session id, once it has been heard from: what our datagrams to it are
    sealed for in shared-key mode."""
    greeted_anyone: float = float("-inf")
    """When a refusal last made us greet it with a HELLO sealed for anyone."""
    confirmed: bool = False
    """The peer has been heard from (so PING it and send it DATA) rather than not yet (so
    greet it with HELLOs, and let its DATA wait: a peer named by an address it is already
    known under must not get a second stream)."""
    next_seq: int = 0
    unsent: deque[_Fragment] = field(default_factory=deque)
    in_flight: dict[int, _Fragment] = field(default_factory=dict)
    retransmit_heap: list[tuple[float, int]] = field(default_factory=list)
    deliveries: dict[int, _Delivery] = field(default_factory=dict)
    """In queueing order, which is also deadline order."""
    srtt: float | None = None
    rttvar: float = 0.0
    latest_rtt: float = 0.0
    rto: float = 0.25
    backoff: int = 0
    """Timer expiries since data was last acknowledged (RFC 6298 5.5 doubling)."""
    next_probe: float | None = None
    probe_backoff: float = _HELLO_RETRY_FIRST
    pings: dict[int, tuple[float, int]] = field(default_factory=dict)
    """Outstanding PINGs: token -> (when sent, the base it carried)."""
    transmitted: int = 0
    """Transmissions so far, the clock of `_Fragment.order`."""
    largest_acked_order: int = 0
    loss_time: float | None = None
    """When a fragment overtaken by `_LOSS_THRESHOLD` others passes the time threshold."""
    reorder_window: float = 0.0
    """How late this peer's datagrams have been seen to arrive: added to the time
    threshold, so that a datagram that is only late is not resent (RACK, RFC 8985 6.2,
    measured rather than stepped)."""
    fast_resent: dict[int, float] = field(default_factory=dict)
    """seq -> first transmission, of fragments the fast path resent lately."""
    resends_since_late: int = 0
    base_known: bool = True
    """False from a give-up until a PONG confirms the peer has heard our new base."""
    refused: RejectReason | None = None
    """Why the peer last said it could not authenticate our datagrams, if it did."""
    announced: bool = False
    """It announces itself on our LAN, which keeps it present: no keepalive PINGs."""
    answered_at: float = float("-inf")
    """When the receive half last passed on an ACK, a PONG or a sign of presence from it:
    only a peer silent for `suspect_after` is worth reporting as unanswered."""
    rooms: tuple[str, ...] | None = None
    """The rooms it is in; None until its HELLO or MEMBERSHIP said. A configured peer
    whose rooms are not known yet gets every room's messages (they wait for its answer,
    and those for rooms it turns out not to be in then fail)."""
    introductions: int = 0
    """HELLOs left to send to an address a ROSTER named, until it answers."""
    instance: bytes = b""
    """The peer's installation (instance id), once its HELLO said: direct messages to a
    peer that is away are held for it (`Sender._held`)."""
    nick: str = ""
    """Its nickname as last heard, for what the user is told of held messages."""

    def base(self) -> int:
        """The first seq of the oldest message neither delivered nor given up (else the
        next seq): not the oldest in flight, since a fragment the peer acknowledged
        only selectively is still owed to it should it restart (`Sender._restream`)."""
        for delivery in self.deliveries.values():
            return delivery.fragments[0].seq
        return self.unsent[0].seq if self.unsent else self.next_seq


class Outboxed(NamedTuple):
    """A direct message written in an earlier run and kept in the outbox on disk: for
    whom, and until when (`Sender.send_message`)."""

    instance: bytes
    """The recipient's installation (8-byte instance id)."""
    nick: str
    """Its nickname when the message was written."""
    expires_at_ms: int
    """When the message fails if that peer has not been back (wall clock, ms)."""


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """What the send half knows of one peer (for `/peers`)."""

    peer: Address
    configured: bool
    pending: int
    srtt: float | None


class Sender:
    """Send half. Call its methods, then drain `datagrams_to_send` and events."""

    def __init__(
        self, session: bytes, nick: str, config: Config, *, wall_offset: float = 0.0
    ) -> None:
        """`wall_offset` turns `now` into wall-clock seconds, for shared-key mode."""
        if len(session) != 8:
            raise ValueError("session id must be 8 bytes")
        self.session = session
        self.nick = validate_nick(nick)
        self.config = config
        self.stats = Stats()
        self._wall_offset = wall_offset
        self._sealer: Sealer | None = None
        self._overhead = 0
        if config.key is not None:
            from . import crypto  # only shared-key mode pays for importing cryptography

            self._sealer = crypto.Sealer(config.key, session, crypto.ORIGIN_SEND)
            self._overhead = crypto.OVERHEAD
        self._targets: dict[Address, _Target] = {}
        self._outgoing: list[Outgoing] = []
        self._events: deque[Event] = deque()
        self._next_message_id = 1
        self._next_token = 1
        self._pending = 0
        self._farewell: dict[Address, tuple[bytes, int, int]] = {}
        self._announcer = Announcer(session, config.announce_period, bool(config.announce_to))
        self._announce_to = config.announce_to
        self._unanswered: list[Address] = []
        self.rooms: list[str] = list(config.rooms)
        """The rooms we are in, the one `send_message` uses by default first."""
        self._rooms_version = 0
        self._room_keys: dict[str, RoomKey] = {}
        """Keyed rooms: listed by their tag, their lines sealed with the room's key."""
        for room, key in config.room_keys:
            self._set_room_key(room, key)
        self._next_control_id = -1
        """Control messages are numbered down from -1, apart from the caller's."""
        self._raw: dict[Address, str] = {}
        """Plain text peers and the encoding replies to each are written in."""
        self._ipmsg: IpmsgOutbound | None = None
        """IP Messenger users: their messages, and every IPMsg packet we send (only with
        `Config.ipmsg`, which alone pays for importing the dialect)."""
        if config.ipmsg:
            from .ipmsg_peers import Outbound

            self._ipmsg = Outbound(config, session, self.nick, wall_offset, self.stats)
        self._held: dict[bytes, list[_Held]] = {}
        """The offline outbox: direct messages for installations (instance ids) that are
        away, each list in the order the messages were written."""
        self._held_count = 0
        self._held_bytes = 0
        self._held_expiry: float | None = None
        """When the first held message expires (None: none held)."""
        self._key_prefix = config.instance
        self._key_base = int.from_bytes(session, "big")
        """Message keys end in this plus a count: unique in the run, and, the session
        being random, across runs."""
        self._keys_made = 0

    # -- caller's API ---------------------------------------------------------

    def add_peer(self, addr: Address, now: float) -> None:
        """Send to `addr` from now on; greet it with HELLOs until it answers."""
        key, target = self._find(addr)
        if target is None:
            if len(self._targets) >= self.config.max_peers and not self._forget_one():
                raise LocalProtocolError(f"at most {self.config.max_peers} peers")
            target = self._targets[addr] = _Target(True, True, addr, rto=self.config.initial_rto)
        target.configured = target.active = True
        if not target.confirmed:
            target.probe_backoff = _HELLO_RETRY_FIRST
            self._probe(key, target, now)

    def remove_peer(self, addr: Address, now: float) -> None:
        """Stop sending to `addr` and say BYE; its pending deliveries fail at once.

        The target is kept, idle, with its seqs: added again, the peer gets our HELLO and
        then the same stream, so nothing it still remembers of it is mistaken."""
        key, target = self._find(addr)
        if target is None:
            return
        for delivery in list(target.deliveries.values()):
            self._fail(key, target, delivery, now, "peer removed")
        if target.confirmed or target.configured:
            self._outgoing.append((self._bye(key), target.addr, target.session))
        target.configured = target.active = target.confirmed = False
        target.next_probe = None

    def start_announcing(self, addresses: tuple[Address, ...]) -> None:
        """Announce ourselves to `addresses` (the discovery group, the broadcast address)
        from now on: at once, then on the schedule of `discovery`."""
        self._announce_to = addresses
        if addresses:
            self._announcer.start()
        else:
            self._announcer.stop()

    def set_nick(self, nick: str) -> None:
        """Change our nickname and announce it to every peer that is present."""
        self.nick = validate_nick(nick)
        if self._ipmsg is not None:
            self._ipmsg.set_nick(self.nick)
        for target in self._targets.values():
            if target.confirmed:
                self._send_hello(target, wants_reply=False)

    def join(self, room: str, now: float, *, key: bytes | None = None) -> str:
        """Join `room` (InvalidRoom for a bad name; LocalProtocolError past MAX_ROOMS) and
        tell every present peer; return the name as the room is known. With `key` (the
        master key of the room's passphrase, `crypto.derive_master_key`) the room is
        keyed: only holders of the same key see its lines or us in it."""
        room = validate_room(room)
        if room in self.rooms and key is None and room not in self._room_keys:
            return room  # already in it, unkeyed: nothing changes
        if room not in self.rooms and len(self.rooms) >= MAX_ROOMS:
            raise LocalProtocolError(f"at most {MAX_ROOMS} rooms at once; /leave one first")
        self._set_room_key(room, key)
        if room not in self.rooms:
            self.rooms.append(room)
        self._membership_changed(now)
        return room

    def _set_room_key(self, room: str, key: bytes | None) -> None:
        if key is None:
            self._room_keys.pop(room, None)
        else:
            from .crypto import RoomKey  # only keyed rooms pay for importing cryptography

            self._room_keys[room] = RoomKey(key, room)

    def leave(self, room: str, now: float) -> str:
        """Leave `room` and tell every present peer (LocalProtocolError if not in it)."""
        room = validate_room(room)
        if room not in self.rooms:
            raise LocalProtocolError(f"not in #{room}")
        self.rooms.remove(room)
        self._room_keys.pop(room, None)
        self._membership_changed(now)
        return room

    def _wire_rooms(self) -> tuple[str, ...]:
        """Our rooms as the wire lists them: a keyed room by our tag for it."""
        keys = self._room_keys
        return tuple(keys[r].tag(self.session) if r in keys else r for r in self.rooms)

    def members(self, room: str) -> list[Address]:
        """The peers a message said in `room` would go to now."""
        keyed = room in self._room_keys
        return [a for a, target in self._targets.items() if _member(target, room, keyed=keyed)]

    def _membership_changed(self, now: float) -> None:
        """MEMBERSHIP, reliably, to every peer that is present; the others get our rooms
        in the HELLO that greets or answers them."""
        self._rooms_version += 1
        text = encode_membership(self._rooms_version, self._wire_rooms())
        for addr, target in self._targets.items():
            if target.confirmed:
                self._control(addr, target, wire.Conversation.MEMBERSHIP, "", text, now)

    def _control(
        self,
        addr: Address,
        target: _Target,
        conversation: wire.Conversation,
        room: str,
        text: str,
        now: float,
    ) -> None:
        """Queue a MEMBERSHIP or ROSTER message to one target."""
        message_id, self._next_control_id = self._next_control_id, self._next_control_id - 1
        self._queue(
            [target], encode_text(text), now, 0, message_id, conversation, room, control=True
        )

    def send_message(
        self,
        text: str,
        now: float,
        *,
        sent_at_ms: int,
        to: list[Address] | None = None,
        room: str | None = None,
        message_id: int | None = None,
        key: bytes | None = None,
        outboxed: Outboxed | None = None,
    ) -> int:
        """Queue `text` for the members of `room` (by default our first room), or for
        each peer in `to`: as a direct message, or, with `room` too, as said in that room
        (a room message sent again to those it failed for); return the message id.

        `message_id` lets a caller that numbers messages itself (the process model's
        parent) choose it; `key` is the message key when the caller made it (it stored
        the message under it first), else one is made. A direct message to a udpchat
        peer that is away is held until its installation is back (`MessageHeld`);
        `outboxed` sends one held in an earlier run, to that installation, instead of to
        `to`. Raises MessageTooLong, NoPeers or OutboxFull; nothing is queued then.
        """
        if key is not None and len(key) != wire.KEY_BYTES:
            raise ValueError("a message key is 16 bytes")
        if outboxed is not None:
            return self._send_outboxed(text, now, sent_at_ms, message_id, key, outboxed)
        if to is not None and room is None:
            foreign = [a for a in dict.fromkeys(to) if a in self._raw or self._is_ipmsg(a)]
            if foreign:
                return self._send_foreign(text, to, foreign, now, message_id, sent_at_ms)
        if self.config.transform is not None:
            text = self.config.transform.outgoing(text)
        raw = encode_text(text)
        if to is not None:
            conversation = wire.Conversation.DIRECT if room is None else wire.Conversation.ROOM
            room = room or ""
            # dict.fromkeys: an address named twice in `to` still gets one delivery.
            found = [self._find(a) for a in dict.fromkeys(to)]
            targets = list({key: t for key, t in found if t is not None}.values())
            if not targets:
                raise NoPeers("no peer to send to")
        else:
            conversation = wire.Conversation.ROOM
            if room is None:
                if not self.rooms:
                    raise NoPeers("not in any room: /join one, or /msg a peer")
                room = self.rooms[0]
            keyed = room in self._room_keys
            targets = [t for t in self._targets.values() if _member(t, room, keyed=keyed)]
            if not targets:
                raise NoPeers(f"nobody else is in #{room}")
        if self._pending + len(targets) > self.config.max_pending:
            raise OutboxFull(f"outbox full: {self._pending} messages are waiting for delivery")
        if room in self._room_keys and len(raw) + ROOM_OVERHEAD > wire.MAX_MESSAGE_BYTES:
            raise MessageTooLong(
                f"a keyed room's line is at most {wire.MAX_MESSAGE_BYTES - ROOM_OVERHEAD}"
                " bytes of UTF-8"
            )
        key = key or self._new_key()
        message = None
        away: list[_Target] = []
        if conversation is wire.Conversation.DIRECT:
            # Only a direct message may wait in the outbox: it needs what it is kept as.
            message = _Message(raw, sent_at_ms, key, conversation, room, now + self.config.keep)
            away = [t for t in targets if self._holds(t, message)]
            if away:
                self._check_held(raw, len(away))
                targets = [t for t in targets if t not in away]
        if message_id is None:
            message_id = self._next_message_id
        self._next_message_id = max(self._next_message_id, message_id + 1)
        if targets:
            self._queue(
                targets, raw, now, sent_at_ms, message_id, conversation, room, key, message=message
            )
        for target in away:
            assert message is not None
            reason = f"{target.nick or 'the peer'} is away"
            self._keep(message_id, message, now, target.instance, target.nick, target.addr, reason)
        self.stats.messages_sent += 1
        return message_id

    def _send_outboxed(
        self,
        text: str,
        now: float,
        sent_at_ms: int,
        message_id: int | None,
        key: bytes | None,
        outboxed: Outboxed,
    ) -> int:
        """A direct message held in an earlier run (its outbox entry): to whichever
        target is that installation now, or held until one is."""
        if len(outboxed.instance) != 8 or outboxed.instance == bytes(8):
            raise ValueError("an outboxed message names an 8-byte instance id")
        raw = encode_text(text)
        expires = outboxed.expires_at_ms / 1000 - self._wall_offset
        message = _Message(
            raw, sent_at_ms, key or self._new_key(), wire.Conversation.DIRECT, "", expires
        )
        if message_id is None:
            message_id = self._next_message_id
        self._next_message_id = max(self._next_message_id, message_id + 1)
        self.stats.messages_sent += 1
        here = [t for t in self._targets.values() if t.instance == outboxed.instance]
        here = [t for t in here if t.confirmed and message.expires > now]
        if here:
            conversation = wire.Conversation.DIRECT
            self._queue(
                here[:1], raw, now, sent_at_ms, message_id, conversation, "", message.key,
                message=message,
            )  # fmt: skip
        else:  # held, or failed at once when its time is up
            nick = outboxed.nick
            self._keep(message_id, message, now, outboxed.instance, nick, None, f"{nick} is away")
        return message_id

    def _new_key(self) -> bytes:
        self._keys_made += 1
        return self._key_prefix + _KEY_TAIL.pack((self._key_base + self._keys_made) & _U64)

    def _holds(self, target: _Target, message: _Message) -> bool:
        """Whether `message` waits in the outbox for `target` rather than on the wire: a
        direct message to a udpchat peer we know by its installation, that is away."""
        return (
            message.conversation is wire.Conversation.DIRECT
            and bool(target.instance)
            and self.config.keep > 0
            and not target.confirmed
        )

    def _check_held(self, raw: bytes, count: int) -> None:
        """OutboxFull when `count` more copies of `raw` would not fit in the outbox."""
        config = self.config
        if (
            self._held_count + count > config.max_held
            or self._held_bytes + count * len(raw) > config.max_held_bytes
        ):
            raise OutboxFull(
                f"outbox full: {self._held_count} messages wait for peers that are away"
            )

    def _keep(
        self,
        message_id: int,
        message: _Message,
        now: float,
        instance: bytes,
        nick: str,
        peer: Address | None,
        reason: str,
        queued_at: float | None = None,
    ) -> None:
        """Hold `message` for the installation `instance` until it is present (see
        `_release`), or fail it: expired, or no room in the outbox."""
        queued_at = now if queued_at is None else queued_at
        failure = None
        if message.expires <= now:
            failure = self._too_long(nick)
        else:
            try:
                self._check_held(message.raw, 1)
            except OutboxFull as full:
                failure = str(full)
        if failure is not None:
            self._failed(message_id, peer, now - queued_at, failure)
            return
        self._held.setdefault(instance, []).append(
            _Held(message_id, message, queued_at, nick, peer)
        )
        self._held_count += 1
        self._held_bytes += len(message.raw)
        if self._held_expiry is None or message.expires < self._held_expiry:
            self._held_expiry = message.expires
        self._events.append(
            MessageHeld(
                message_id=message_id,
                peer=peer,
                nick=nick,
                reason=reason,
                expires_in=message.expires - now,
            )
        )

    def _release(self, target: _Target, now: float) -> None:
        """`target` is present: queue what the outbox holds for its installation."""
        held = self._held.pop(target.instance, None)
        if not held:
            return
        for entry in held:
            message = entry.message
            self._held_count -= 1
            self._held_bytes -= len(message.raw)
            self._queue(
                [target],
                message.raw,
                now,
                message.sent_at_ms,
                entry.message_id,
                message.conversation,
                message.room,
                message.key,
                message=message,
                queued_at=entry.queued_at,
            )
        self._held_expiry = self._first_expiry()

    def _first_expiry(self) -> float | None:
        return min(
            (h.message.expires for entries in self._held.values() for h in entries),
            default=None,
        )

    def _too_long(self, nick: str) -> str:
        return f"{nick or 'the peer'} was not back within {_duration(self.config.keep)}"

    def _expire(self, now: float) -> None:
        """Fail the held messages whose time (`Config.keep`) is up."""
        for instance, entries in list(self._held.items()):
            for entry in [h for h in entries if h.message.expires <= now]:
                self._unhold(instance, entry, now, self._too_long(entry.nick))

    def cancel(self, message_id: int, now: float) -> bool:
        """Take a message the outbox holds out of it (it fails, "cancelled"); False when
        it holds none of that id (delivered, failed, or on the wire already)."""
        for instance, entries in self._held.items():
            for entry in entries:
                if entry.message_id == message_id:
                    self._unhold(instance, entry, now, CANCELLED)
                    return True
        return False

    def _unhold(self, instance: bytes, entry: _Held, now: float, reason: str) -> None:
        """Take `entry` out of the outbox as failed, for `reason`."""
        entries = self._held[instance]
        entries.remove(entry)
        if not entries:
            del self._held[instance]
        self._held_count -= 1
        self._held_bytes -= len(entry.message.raw)
        self._held_expiry = self._first_expiry()
        self._failed(entry.message_id, entry.peer, now - entry.queued_at, reason)

    def _is_ipmsg(self, addr: Address) -> bool:
        """An IP Messenger user, and not a udpchat that speaks our own protocol there."""
        if self._ipmsg is None or not self._ipmsg.knows(addr):
            return False
        target = self._targets.get(addr)
        return target is None or not target.confirmed

    def _send_foreign(
        self,
        text: str,
        to: list[Address],
        foreign: list[Address],
        now: float,
        message_id: int | None,
        sent_at_ms: int,
    ) -> int:
        """A direct message to plain text peers and IP Messenger users among `to` (and
        to the udpchat peers among it, as usual). Raw peers get plain text in their
        encoding, once: they cannot acknowledge, so `RawMessageSent` is the message's
        last event there. IPMsg users get it in their dialect, acknowledged and
        retransmitted (`ipmsg_peers.Outbound`)."""
        raw_to = [a for a in foreign if a in self._raw]
        ipmsg_to = [a for a in foreign if a not in self._raw]
        others = [a for a in to if a not in foreign]
        datagrams = []
        for addr in raw_to:
            try:
                datagrams.append(
                    (plain.encode(text, self._raw[addr], self.config.raw_line_end), addr)
                )
            except ValueError as error:
                raise LocalProtocolError(f"not sent: {error}") from None
        if ipmsg_to:
            assert self._ipmsg is not None  # an address is IPMsg only with it
            self._ipmsg.check(text, ipmsg_to)
        if self.pending() + len(ipmsg_to) > self.config.max_pending:
            raise OutboxFull(f"outbox full: {self.pending()} messages are waiting for delivery")
        if others:
            message_id = self.send_message(
                text, now, sent_at_ms=sent_at_ms, to=others, message_id=message_id
            )
        elif message_id is None:
            message_id = self._next_message_id
        self._next_message_id = max(self._next_message_id, message_id + 1)
        for data, addr in datagrams:
            self._outgoing.append((data, addr, ANYONE))
            self._events.append(
                RawMessageSent(message_id=message_id, peer=addr, encoding=self._raw[addr])
            )
        if self._ipmsg is not None:
            self._ipmsg.send(message_id, text, ipmsg_to, now)
        if not others:
            self.stats.messages_sent += 1
        return message_id

    def _queue(
        self,
        targets: list[_Target],
        raw: bytes,
        now: float,
        sent_at_ms: int,
        message_id: int,
        conversation: wire.Conversation,
        room: str,
        message_key: bytes = _NO_KEY,
        *,
        control: bool = False,
        message: _Message | None = None,
        queued_at: float | None = None,
    ) -> None:
        keyed = self._room_keys and conversation is wire.Conversation.ROOM
        key = self._room_keys.get(room) if keyed else None
        field = room if key is None else key.tag(self.session)
        payloads = _split(raw, self.nick, self._overhead, field)
        deadline = now + self.config.give_up_after
        for target in targets:
            if key is not None:
                # Sealed for this recipient at this seq (crypto.room_associated_data).
                associated = room_associated_data(
                    self.session, target.session, field, target.next_seq
                )
                payloads = _split(key.seal(raw, associated), self.nick, self._overhead, field)
            delivery = _Delivery(
                message_id,
                now if queued_at is None else queued_at,
                deadline,
                len(payloads),
                last_seq=target.next_seq + len(payloads) - 1,
                room=room,
                control=control,
                message=message,
            )
            target.deliveries[message_id] = delivery
            for index, payload in enumerate(payloads):
                seq = target.next_seq
                target.next_seq += 1
                record = wire.Data(
                    self.session,
                    seq,
                    0,
                    index,
                    len(payloads),
                    payload,
                    sent_at_ms,
                    self.nick,
                    conversation,
                    field,
                    message_key,
                )
                fragment = _Fragment(seq, wire.encode(record), delivery)
                delivery.fragments.append(fragment)
                target.unsent.append(fragment)
        if not control:
            self._pending += len(targets)
        for target in targets:
            if not target.confirmed and target.next_probe is not None:
                # Its DATA waits for its answer: greet it at the pace of retransmission.
                soon = now + target.rto
                if target.next_probe > soon:
                    target.next_probe = now
                    target.probe_backoff = target.rto

    def close(self) -> None:
        """Say BYE to every peer we have been talking to, acknowledging in it what the
        receive half reported in its `FarewellNote` (pass that note first)."""
        for addr, target in self._targets.items():
            if target.configured or target.confirmed:
                self._outgoing.append((self._bye(addr), target.addr, target.session))
        self._announcer.stop()
        if self._ipmsg is not None:
            self._ipmsg.close()

    def take_farewell(self, note: FarewellNote) -> None:
        """Keep what the receive half received of each peer, for `close`'s BYEs."""
        self._farewell = {peer: (session, c, s) for peer, session, c, s in note.acks}

    def _bye(self, key: Address) -> bytes:
        ack = self._farewell.get(key)
        return wire.encode(wire.Bye(self.session) if ack is None else wire.Bye(self.session, *ack))

    def handle_note(self, note: Note, now: float) -> None:
        """Take news from the receive half."""
        match note:
            case AckNote():
                self._on_ack(note, now)
            case PongNote():
                target = self._targets.get(note.peer)
                if target is not None:
                    target.answered_at = now
                ping = target.pings.pop(note.token, None) if target else None
                if target is not None and ping is not None:
                    sent, base = ping
                    self._rtt_sample(target, now - sent)
                    if base >= target.base():
                        target.base_known = True
            case PeerNote():
                self._on_peer(note, now)
            case RefusedNote():
                target = self._targets.get(note.peer)
                if target is not None and target.confirmed:
                    self._greet_anyone(target, now)
                elif target is not None:
                    target.refused = note.reason
            case AddressNote():
                self._on_address(note.peer, note.address)
            case FarewellNote():
                self.take_farewell(note)
            case AnnouncedNote():
                target = self._targets.get(note.peer)
                if target is not None:
                    target.announced = True
            case RoomsNote():
                target = self._targets.get(note.peer)
                if target is not None and target.confirmed:
                    self._on_rooms(note.peer, target, note.rooms, now)
            case IntroducedNote():
                self._on_introduced(note, now)
            case RawPeerNote():
                self._raw[note.peer] = note.encoding
                while len(self._raw) > self.config.max_peers:
                    del self._raw[next(iter(self._raw))]
            case IpmsgPeerNote() | IpmsgAnswerNote() | IpmsgAckNote():
                if self._ipmsg is not None:
                    self._ipmsg.handle_note(note, now)

    def handle_timer(self, now: float) -> None:
        """Give up on late deliveries, retransmit what is due, send due probes and the
        due announcement."""
        if self._announcer.due(now):
            self._announce()
        if self._held_expiry is not None and self._held_expiry <= now:
            self._expire(now)
        if self._ipmsg is not None:
            self._ipmsg.handle_timer(now)
        for addr, target in self._targets.items():
            past_deadline: list[_Delivery] = []
            for delivery in target.deliveries.values():  # in deadline order, but for graces
                if delivery.deadline > now:
                    if delivery.waiting:
                        continue  # its grace (below) may outlast later deadlines
                    break
                past_deadline.append(delivery)
            for delivery in past_deadline:
                if delivery.unacked == 0 and not delivery.waiting:
                    # Every fragment arrived, and the peer holds the message behind an
                    # earlier one: once that is given up (a PING tells the new base), the
                    # peer shows it and its cumulative ACK says so. A peer that died
                    # holding it never will, and then it fails after this grace.
                    delivery.waiting = True
                    delivery.deadline = now + max(4 * target.rto, _SHOWN_GRACE)
                    continue
                reason = f"no acknowledgement within {self.config.give_up_after:g} s"
                if delivery.waiting:
                    reason = "the peer got it but never showed it (held behind a lost message)"
                if target.refused is not None:
                    reason += f"; it could not authenticate our datagrams ({target.refused.value})"
                self._fail_or_hold(addr, target, delivery, now, reason)
            heap, due_now = target.retransmit_heap, []
            while heap and heap[0][0] <= now:
                due, seq = heapq.heappop(heap)
                fragment = target.in_flight.get(seq)
                if fragment is not None and fragment.retransmit_at == due:
                    due_now.append(fragment)
            if due_now:
                head = next(iter(target.in_flight))
                if any(fragment.seq == head for fragment in due_now):
                    target.backoff = min(target.backoff + 1, 16)
                self.stats.retransmissions += len(due_now)
                for fragment in due_now:
                    self._transmit(addr, target, fragment, now)
                # Waiting since the oldest DATA in flight left, or since the last answer
                # if that came later: a peer merely idle before we wrote to it is not
                # silent towards us yet.
                waiting_since = max(target.answered_at, target.in_flight[head].first_sent_at)
                if target.confirmed and now - waiting_since >= self.config.suspect_after:
                    self._unanswered.append(addr)
            if target.loss_time is not None and target.loss_time <= now:
                self._resend_lost(addr, target, now)
            if target.next_probe is not None and target.next_probe <= now:
                self._probe(addr, target, now)

    # -- outputs --------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Fill each peer's window with new fragments; return all datagrams due now."""
        window = self.config.send_window
        for addr, target in self._targets.items():
            unsent = target.unsent
            if unsent and target.confirmed:
                base = target.base()
                while unsent and unsent[0].seq < base + window:
                    self.stats.data_sent += 1
                    self._transmit(addr, target, unsent.popleft(), now)
        outgoing, self._outgoing = self._outgoing, []
        out = seal_all(self._sealer, outgoing, int((now + self._wall_offset) * 1000))
        if self._ipmsg is not None:
            out += self._ipmsg.datagrams_to_send(now)
        self.stats.datagrams_sent += len(out)
        self.stats.bytes_sent += sum(len(data) for data, _ in out)
        return out

    def get_timer(self) -> float | None:
        """The earliest deadline, probe, retransmission or announcement; None when there
        is none."""
        soonest = self._announcer.next_at
        if self._held_expiry is not None and (soonest is None or self._held_expiry < soonest):
            soonest = self._held_expiry
        ipmsg_at = self._ipmsg.get_timer() if self._ipmsg is not None else None
        if ipmsg_at is not None and (soonest is None or ipmsg_at < soonest):
            soonest = ipmsg_at
        for target in self._targets.values():
            if not target.deliveries and target.next_probe is None and target.loss_time is None:
                continue  # idle (most peers of a quiet LAN): nothing in flight, no probe due
            heap = target.retransmit_heap
            while heap:
                fragment = target.in_flight.get(heap[0][1])
                if fragment is not None and fragment.retransmit_at == heap[0][0]:
                    break
                heapq.heappop(heap)  # acknowledged or rescheduled: stale
            candidates = [heap[0][0]] if heap else []
            if target.loss_time is not None:
                candidates.append(target.loss_time)
            if target.deliveries:
                candidates.append(next(iter(target.deliveries.values())).deadline)
            if target.next_probe is not None:
                candidates.append(target.next_probe)
            for when in candidates:
                if soonest is None or when < soonest:
                    soonest = when
        return soonest

    def next_event(self) -> Event | None:
        if self._events:
            return self._events.popleft()
        return self._ipmsg.next_event() if self._ipmsg is not None else None

    def take_unanswered(self) -> list[Address]:
        """Peers we retransmitted to since the last call and that have not answered for
        `suspect_after` (no ACK, PONG or sign of presence): the receive half's
        `Receiver.suspect` reports those it has not heard from either as gone. Filtered
        here, so that retransmissions under ordinary loss cost the receive half nothing
        (in the process model, a message through the parent)."""
        unanswered, self._unanswered = self._unanswered, []
        return unanswered

    def pending(self) -> int:
        """Deliveries (message, peer) neither acknowledged nor failed yet."""
        return self._pending + (self._ipmsg.pending() if self._ipmsg is not None else 0)

    def active_peers(self) -> int:
        """How many peers a new message to the default room would go to."""
        if not self.rooms:
            return 0
        room = self.rooms[0]
        keyed = room in self._room_keys
        return sum(_member(t, room, keyed=keyed) for t in self._targets.values())

    def targets(self) -> list[TargetInfo]:
        rows = [
            TargetInfo(a, t.configured, len(t.deliveries), t.srtt) for a, t in self._targets.items()
        ]
        if self._ipmsg is None:
            return rows
        return rows + [
            TargetInfo(a, False, pending, None)
            for a, pending in self._ipmsg.pending_by_peer()
            if a not in self._targets
        ]

    # -- internals ------------------------------------------------------------

    def _transmit(self, addr: Address, target: _Target, fragment: _Fragment, now: float) -> None:
        fragment.transmissions += 1
        fragment.sent_at = now
        if fragment.transmissions == 1:
            fragment.first_sent_at = now
        target.transmitted += 1
        fragment.order = target.transmitted
        timeout = target.rto * (1 << target.backoff)
        fragment.retransmit_at = now + min(timeout, self.config.max_rto)
        target.in_flight[fragment.seq] = fragment
        heapq.heappush(target.retransmit_heap, (fragment.retransmit_at, fragment.seq))
        datagram = wire.with_base(fragment.datagram, target.base())
        self._outgoing.append((datagram, target.addr, target.session))

    def _on_ack(self, note: AckNote, now: float) -> None:
        target = self._targets.get(note.peer)
        if target is not None:
            target.answered_at = now
        if target is None or not (target.in_flight or target.deliveries):
            return
        acked: list[_Fragment] = []
        in_flight = target.in_flight
        while in_flight:
            seq = next(iter(in_flight))
            if seq >= note.cumulative:
                break
            acked.append(in_flight.pop(seq))
        bits, seq = note.selective, note.cumulative + 1
        while bits:
            if bits & 1 and seq in in_flight:
                acked.append(in_flight.pop(seq))
            bits >>= 1
            seq += 1
        sample: _Fragment | None = None
        for fragment in acked:
            if fragment.transmissions == 1 and (sample is None or fragment.seq > sample.seq):
                sample = fragment
        if sample is not None:
            self._rtt_sample(target, now - sample.sent_at)
        if note.duplicate:
            self._on_late_arrival(target, note.duplicate - 1, now)
        if acked:
            target.backoff = 0
            order = max(fragment.order for fragment in acked)
            target.largest_acked_order = max(target.largest_acked_order, order)
            self._resend_lost(note.peer, target, now)
        for fragment in acked:
            fragment.delivery.unacked -= 1
        # Delivered means shown: the receiver shows messages in seq order and its
        # cumulative point passes a message only once it has handed it on, while a
        # message it holds behind a gap is only selectively acknowledged (and is lost
        # if it dies). Deliveries are in seq order, so the first one not passed ends it.
        deliveries = target.deliveries
        while deliveries:
            delivery = next(iter(deliveries.values()))
            if delivery.last_seq >= note.cumulative or delivery.unacked:
                break
            del deliveries[delivery.message_id]
            if delivery.control:
                continue
            self._pending -= 1
            self.stats.messages_delivered += 1
            self._events.append(
                MessageDelivered(
                    message_id=delivery.message_id,
                    peer=note.peer,
                    elapsed=now - delivery.queued_at,
                )
            )

    def _resend_lost(self, addr: Address, target: _Target, now: float) -> None:
        """Resend the fragments that both thresholds declare lost; arm `loss_time` for
        those that only the packet threshold does yet."""
        horizon = target.largest_acked_order - _LOSS_THRESHOLD
        rtt = self.config.initial_rto if target.srtt is None else target.srtt
        delay = max(_TIME_THRESHOLD * max(rtt, target.latest_rtt), _GRANULARITY)
        delay += target.reorder_window
        lost: list[_Fragment] = []
        target.loss_time = None
        for fragment in target.in_flight.values():
            if fragment.order > horizon:
                continue
            due = fragment.sent_at + delay
            if due <= now:
                lost.append(fragment)
            elif target.loss_time is None or due < target.loss_time:
                target.loss_time = due
        self.stats.retransmissions += len(lost)
        for fragment in lost:
            target.fast_resent[fragment.seq] = fragment.first_sent_at
            self._transmit(addr, target, fragment, now)
        while len(target.fast_resent) > _FAST_RESENT_REMEMBERED:
            del target.fast_resent[next(iter(target.fast_resent))]
        target.resends_since_late += len(lost)
        if target.resends_since_late >= _RESENDS_BEFORE_NARROWING:
            # Resends the peer never reported as needless: the loss is real, and waiting
            # longer only delays recovery.
            target.reorder_window /= 2
            target.resends_since_late = 0

    def _on_late_arrival(self, target: _Target, seq: int, now: float) -> None:
        """The peer received `seq` twice. If the fast path had resent it, the first copy
        was only late: widen the reordering window to how late it was."""
        first_sent = target.fast_resent.pop(seq, None)
        if first_sent is None:
            return  # resent by its timer, or duplicated by the network
        rtt = target.srtt or 0.0
        lateness = now - first_sent - rtt
        target.reorder_window = min(max(target.reorder_window, lateness), target.rto)
        target.resends_since_late = 0

    def _rtt_sample(self, target: _Target, rtt: float) -> None:
        """RFC 6298 section 2, with alpha 1/8, beta 1/4, K 4 and the configured floor."""
        target.latest_rtt = rtt
        if target.srtt is None:
            target.srtt, target.rttvar = rtt, rtt / 2
        else:
            target.rttvar = 0.75 * target.rttvar + 0.25 * abs(target.srtt - rtt)
            target.srtt = 0.875 * target.srtt + 0.125 * rtt
        rto = target.srtt + 4 * target.rttvar
        target.rto = min(max(rto, self.config.min_rto), self.config.max_rto)

    def _fail(
        self, addr: Address, target: _Target, delivery: _Delivery, now: float, reason: str
    ) -> None:
        self._drop(target, delivery, now)
        if not delivery.control:
            self._failed(delivery.message_id, addr, now - delivery.queued_at, reason)

    def _failed(self, message_id: int, peer: Address | None, elapsed: float, reason: str) -> None:
        """Count one delivery failed and report it."""
        self.stats.messages_failed += 1
        self._events.append(
            DeliveryFailed(message_id=message_id, peer=peer, elapsed=elapsed, reason=reason)
        )

    def _fail_or_hold(
        self, addr: Address, target: _Target, delivery: _Delivery, now: float, reason: str
    ) -> None:
        """A delivery that cannot go on now: a direct message to a udpchat peer waits in
        the outbox for its installation to be back; anything else fails."""
        message = delivery.message
        holds = (
            message is not None
            and message.conversation is wire.Conversation.DIRECT
            and bool(target.instance)
            and self.config.keep > 0
        )
        if not holds:
            self._fail(addr, target, delivery, now, reason)
            return
        assert message is not None
        self._drop(target, delivery, now)
        self._keep(
            delivery.message_id,
            message,
            now,
            target.instance,
            target.nick,
            target.addr,
            reason,
            queued_at=delivery.queued_at,
        )

    def _drop(self, target: _Target, delivery: _Delivery, now: float) -> None:
        """Take `delivery` off the wire: its fragments leave flight, and base moves past
        them."""
        del target.deliveries[delivery.message_id]
        if not delivery.control:
            self._pending -= 1
        for seq in [s for s, f in target.in_flight.items() if f.delivery is delivery]:
            del target.in_flight[seq]
        if any(f.delivery is delivery for f in target.unsent):
            target.unsent = deque(f for f in target.unsent if f.delivery is not delivery)
        # Our base has moved past the given-up fragments. Later DATA would tell the peer,
        # but there may be none, while it holds later messages waiting for the gap: say
        # it in a PING now, and again until a PONG shows it arrived.
        target.base_known = False
        target.probe_backoff = max(target.rto, self.config.min_rto)
        if target.confirmed:
            target.next_probe = now

    def _on_peer(self, note: PeerNote, now: float) -> None:
        target = self._targets.get(note.peer)
        if target is None:
            if not note.present:
                return
            if len(self._targets) >= self.config.max_peers and not self._forget_one():
                return
            target = _Target(False, True, note.peer, rto=self.config.initial_rto)
            self._targets[note.peer] = target
        was_confirmed, target.confirmed = target.confirmed, note.present
        if note.instance:
            target.instance = note.instance
        if note.nick:
            target.nick = note.nick
        if note.present and note.session:
            if note.session != target.session:
                target.rooms = None  # a new session: its rooms come with it
                if target.session != ANYONE:
                    self._restream(note.peer, target, now)
            target.session = note.session
        if note.announced:
            target.announced = True
        if note.present:
            target.active = True
            target.introductions = 0
            target.refused = None
            target.answered_at = now
            if not was_confirmed or not target.base_known or target.next_probe is None:
                target.next_probe = now + (
                    0 if not target.base_known else self.config.keepalive_interval
                )
        else:
            # Greet it again as at start-up: after 1 s, then 2, 4, ... up to the cap.
            target.active = target.configured
            target.probe_backoff = _HELLO_RETRY_FIRST * 2
            target.next_probe = now + _HELLO_RETRY_FIRST if target.configured else None
            # Direct messages wait for it in the outbox; after a BYE, what else still
            # waits for it will never be acknowledged.
            reason = f"{note.nick or 'the peer'} " + ("left" if note.bye else "is away")
            for delivery in list(target.deliveries.values()):
                message = delivery.message
                direct = message is not None and message.conversation is wire.Conversation.DIRECT
                if note.bye or (direct and target.instance and self.config.keep > 0):
                    self._fail_or_hold(note.peer, target, delivery, now, reason)
        if note.send_hello:
            # A peer whose rooms we do not know is asked for its HELLO in turn.
            self._send_hello(target, wants_reply=note.rooms is None, answering_at=now)
        if note.present and note.rooms is not None:
            self._on_rooms(note.peer, target, note.rooms, now)
        if note.present and target.instance and self._held:
            self._release(target, now)

    def _restream(self, addr: Address, target: _Target, now: float) -> None:
        """The peer restarted: what it held unshown died with it, although it may have
        acknowledged that selectively. Send every fragment not yet passed by its
        cumulative point again, now, in seq order: the new session starts at our base
        and gets the rest of the stream whole. A message the old session had shown (its
        cumulative ACK lost) comes again under its key and is shown once. The clock of
        each message still owed starts again, as for a message sent now."""
        if not target.deliveries:
            return
        for delivery in list(target.deliveries.values()):
            if delivery.room in self._room_keys and not delivery.control:
                # Sealed for the old session (docs/protocol.md, "Keyed rooms"): the new
                # one cannot open it, and would acknowledge what it could not show.
                who = target.nick or "the peer"
                reason = f"{who} restarted before showing it, and it was sealed for its old run"
                self._fail(addr, target, delivery, now, reason)
        flight = target.in_flight
        deadline = now + self.config.give_up_after
        for delivery in target.deliveries.values():
            delivery.deadline, delivery.waiting = deadline, False
            for fragment in delivery.fragments:
                if fragment.transmissions and fragment.seq not in flight:
                    flight[fragment.seq] = fragment
                    delivery.unacked += 1
        target.in_flight = dict(sorted(flight.items()))
        target.backoff = 0
        for fragment in list(target.in_flight.values()):
            self._transmit(addr, target, fragment, now)

    def _probe(self, addr: Address, target: _Target, now: float) -> None:
        if target.confirmed and target.rooms is None:
            # Present, but its HELLO (and the rooms in it) never reached us: ask for it,
            # on the back-off of greetings, along with the usual PING.
            self._send_hello(target, wants_reply=True)
        if target.confirmed:
            token = self._next_token
            self._next_token += 1
            base = target.base()
            target.pings[token] = (now, base)
            while len(target.pings) > _PINGS_REMEMBERED:
                del target.pings[next(iter(target.pings))]
            ping = wire.encode(wire.Ping(self.session, token, base))
            self._outgoing.append((ping, target.addr, target.session))
            if target.rooms is None:
                target.next_probe = now + target.probe_backoff
                target.probe_backoff = min(target.probe_backoff * 2, self.config.hello_retry_max)
            elif target.base_known:
                # A peer that announces itself needs no keepalive: its announcements
                # keep it present (docs/protocol.md, "Discovery").
                keepalive = None if target.announced else self.config.keepalive_interval
                target.next_probe = None if keepalive is None else now + keepalive
            else:
                target.next_probe = now + target.probe_backoff
                keepalive = self.config.keepalive_interval
                target.probe_backoff = min(target.probe_backoff * 2, keepalive)
        else:
            self._send_hello(target, wants_reply=True)
            target.next_probe = now + target.probe_backoff
            target.probe_backoff = min(target.probe_backoff * 2, self.config.hello_retry_max)
            if not target.configured and target.introductions:
                target.introductions -= 1
                if not target.introductions:  # named by a ROSTER, and never answered
                    target.next_probe = None
                    target.active = False

    def _greet_anyone(self, target: _Target, now: float) -> None:
        """A peer we talk to says it cannot open our datagrams: if it restarted, it can
        open only a HELLO sealed for anyone, so send one (at most one per interval, since
        a refusal is not authenticated)."""
        if now < target.greeted_anyone + self.config.reject_report_interval:
            return
        target.greeted_anyone = now
        self._outgoing.append((wire.encode(self._hello(True)), target.addr, ANYONE))

    def _announce(self) -> None:
        """One ANNOUNCE to each discovery address, sealed for anyone in shared-key mode."""
        announce = wire.encode(
            wire.Announce(
                self.session,
                self.config.instance,
                self.nick,
                self._rooms_version,
                self._wire_rooms(),
            )
        )
        for addr in self._announce_to:
            self._outgoing.append((announce, addr, ANYONE))
        self.stats.announcements_sent += 1

    def _send_hello(
        self, target: _Target, *, wants_reply: bool, answering_at: float | None = None
    ) -> None:
        """Our HELLO, with our rooms. One that answers another (at `answering_at`) is
        never larger than a HELLO that asks for one can be: if the rooms do not fit, they
        follow in a MEMBERSHIP message (docs/protocol.md, "HELLO")."""
        hello = self._hello(wants_reply)
        data = wire.encode(hello)
        if answering_at is not None and len(data) > wire.HELLO_MIN_SIZE:
            data = wire.encode(hello._replace(rooms=(), rooms_follow=True))
            text = encode_membership(self._rooms_version, hello.rooms)
            key, _ = self._find(target.addr)
            self._control(key, target, wire.Conversation.MEMBERSHIP, "", text, answering_at)
        self._outgoing.append((data, target.addr, target.session))

    def _hello(self, wants_reply: bool) -> wire.Hello:
        rooms = self._wire_rooms()
        return wire.Hello(
            self.session,
            self.nick,
            wants_reply,
            self._rooms_version,
            rooms,
            instance=self.config.instance,
        )

    def _on_rooms(self, addr: Address, target: _Target, rooms: tuple[str, ...], now: float) -> None:
        """`target` is in `rooms` now. Messages waiting for it in rooms it is not in fail;
        a member we did not find by discovery learns from us who else is in our rooms
        (a ROSTER per room), so that knowing one member is enough."""
        before = target.rooms
        target.rooms = rooms
        if before is None:
            for delivery in list(target.deliveries.values()):
                if delivery.room and delivery.room not in rooms and not delivery.control:
                    self._fail(addr, target, delivery, now, f"not in #{delivery.room}")
        if target.announced:
            return
        for room in rooms:
            if room not in self.rooms or (before is not None and room in before):
                continue
            if room in self._room_keys:
                continue  # a roster would name a keyed room's members in clear
            members = [
                other.addr
                for key, other in self._targets.items()
                if key != addr and other.confirmed and room in (other.rooms or ())
            ]
            if members:
                self._control(
                    addr, target, wire.Conversation.ROSTER, room, encode_roster(members), now
                )

    def _on_introduced(self, note: IntroducedNote, now: float) -> None:
        """Greet the members of one of our rooms that a ROSTER named and we do not know,
        a few times: each answers with its HELLO if it is there."""
        if note.room not in self.rooms:
            return
        for addr in note.members:
            if self._find(addr)[1] is not None:
                continue
            if len(self._targets) >= self.config.max_peers and not self._forget_one():
                return
            target = _Target(False, False, addr, rto=self.config.initial_rto)
            target.introductions = _INTRODUCTION_TRIES
            self._targets[addr] = target
            self._probe(addr, target, now)

    def _find(self, addr: Address) -> tuple[Address, _Target | None]:
        """The target known as `addr`, or else the one now reached at `addr`."""
        target = self._targets.get(addr)
        if target is None:
            for key, other in self._targets.items():
                if other.addr == addr:
                    return key, other
        return addr, target

    def _on_address(self, key: Address, addr: Address) -> None:
        """The peer known as `key` was heard from `addr`: send there. A target we were
        given as `addr` that has not answered yet is that same peer: its waiting messages
        join the peer's stream, and it is forgotten."""
        target = self._targets.get(key)
        if target is None:
            return
        target.addr = addr
        alias = self._targets.get(addr)
        if alias is None or alias is target or alias.confirmed:
            return
        del self._targets[addr]
        target.configured |= alias.configured
        target.active |= alias.active
        waiting = sorted([*alias.in_flight.values(), *alias.unsent], key=lambda f: f.seq)
        for fragment in waiting:
            delivery = fragment.delivery
            if target.deliveries.setdefault(delivery.message_id, delivery) is not delivery:
                continue  # the peer gets this message in its own stream already
            record = wire.decode(fragment.datagram)
            assert isinstance(record, wire.Data)
            fragment.seq, target.next_seq = target.next_seq, target.next_seq + 1
            fragment.datagram = wire.encode(record._replace(seq=fragment.seq))
            fragment.transmissions = 0
            delivery.last_seq = fragment.seq  # fragments come in seq order: the last wins
            target.unsent.append(fragment)
        self._pending -= sum(
            1
            for d in alias.deliveries.values()
            if target.deliveries.get(d.message_id) is not d and not d.control
        )

    def _forget_one(self) -> bool:
        """Make room by forgetting a learned peer that is gone and owed nothing."""
        for addr, target in self._targets.items():
            if not target.configured and not target.active and not target.deliveries:
                del self._targets[addr]
                return True
        return False


def _duration(seconds: float) -> str:
    """`Config.keep` as people say it: "7 days", "12 h", "30 min", "45 s"."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {'day' if unit == 'days' and count == 1 else unit}"
    return f"{seconds:g} s"


def encode_text(text: str) -> bytes:
    """The UTF-8 of a message's text; MessageTooLong if the protocol cannot carry it."""
    raw = text.encode("utf-8")
    if len(raw) > wire.MAX_MESSAGE_BYTES:
        raise MessageTooLong(
            f"message is {len(raw)} bytes of UTF-8; the limit is {wire.MAX_MESSAGE_BYTES}"
        )
    return raw


def _member(target: _Target, room: str, *, keyed: bool = False) -> bool:
    """Whether a message said in `room` goes to `target`. A configured peer whose rooms
    are not known yet gets it, except in a keyed room, whose lines are sealed for members
    whose tag we have checked (and whose session we therefore know)."""
    if not target.active:
        return False
    if target.rooms is None:
        return target.configured and not keyed
    return room in target.rooms


def _split(raw: bytes, nick: str, overhead: int, room: str = "") -> list[bytes]:
    """Cut a message's UTF-8 text into fragment payloads (docs/protocol.md, "DATA"), each
    datagram `overhead` bytes shorter when it will be sealed."""
    first = wire.MAX_DATAGRAM - wire.DATA_HEADER_SIZE - wire.FIRST_FRAGMENT_OVERHEAD
    first -= len(nick.encode("utf-8")) + len(room.encode("utf-8")) + overhead
    payloads = [raw[:first]]
    step = wire.FRAGMENT_PAYLOAD - overhead
    payloads.extend(raw[i : i + step] for i in range(first, len(raw), step))
    return payloads
