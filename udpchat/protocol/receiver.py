"""The receive half of the core: decoding, duplicate suppression, ordering, reassembly,
acknowledgements, and the table of peers (docs/protocol.md, "Receiving").

Rules this module keeps:
- nothing a peer sends makes it raise; a bad datagram is counted and dropped, and at
  most one DatagramRejected event per `reject_report_interval` reports the drops;
- every DATA datagram is acknowledged, a duplicate too, but a message is shown once;
- messages of one sender session are shown in the order of their seq; a gap is waited
  for until the sender's `base` passes it ("the sender no longer retransmits below base");
- per peer, at most `receive_window` datagrams are held back and one message is being
  reassembled; at most `max_peers` peers are remembered;
- an address that is not a present peer gets `unknown_rate` datagrams a second (a token
  bucket, `max_sources` addresses tracked); the rest are dropped unread, so junk costs
  little and never makes us answer at its rate;
- in shared-key mode nothing is decoded before it has been authenticated (`crypto`);
- a peer is its session, not its address: a session heard from a second address stays
  one peer, known by the address it was first heard from and answered at the newest.
The half answers PINGs itself (PONG) and tells the send half what it needs through notes.
"""

from __future__ import annotations

import codecs
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import ipmsg, plain, wire
from .config import Config, Stats
from .errors import RejectReason, WireError
from .events import (
    Address,
    DatagramRejected,
    DatagramsRefused,
    Event,
    LeaveReason,
    MemberJoined,
    MemberLeft,
    MessageReceived,
    PeerJoined,
    PeerLeft,
    PeerRenamed,
    VersionMismatched,
)
from .notes import (
    AckNote,
    AddressNote,
    AnnouncedNote,
    FarewellNote,
    IntroducedNote,
    Note,
    PeerNote,
    PongNote,
    RawPeerNote,
    RefusedNote,
    RoomsNote,
)
from .rooms import TAG_PREFIX, decode_membership, decode_roster, is_tag, room_associated_data
from .sealing import Outgoing, seal_all

if TYPE_CHECKING:
    from .crypto import Opener, RoomKey, Sealer
    from .ipmsg_peers import Inbound as IpmsgInbound

_PREVIEW_BYTES = 80
_VERIFY_TOKEN = 0
"""The token of the PING that confirms a HELLO sealed for anyone (the send half counts
its own PINGs from 1)."""
_UNVERIFIED_KEPT = 64
_REFUSED_KIND = bytes((wire.Kind.REFUSED,))
_VERSION_BYTE = bytes((wire.VERSION,))
_NO_INSTANCE = bytes(8)
_NO_KEY = bytes(wire.KEY_BYTES)
_SOURCES_COUNTED = 1000
"""Distinct sources a rejection report counts; more are reported as this many."""


@dataclass(slots=True)
class _Peer:
    session: bytes
    """The current session id, or b"" after it said BYE."""
    nick: str
    last_heard: float
    reply_to: Address
    """Where it was last heard from: ACKs go there."""
    present: bool = True
    expected: int | None = None
    """Next seq to deliver; None until the first DATA of this session."""
    held: dict[int, wire.Data] = field(default_factory=dict)
    partial: list[wire.Data] = field(default_factory=list)
    partial_bytes: int = 0
    duplicate: int = 0
    """One more than the highest seq received twice since our last ACK, or 0."""
    retired: deque[bytes] = field(default_factory=deque)
    ended: bytes = b""
    """The session that said BYE, which a HELLO may bring back (`/peer add`)."""
    heard_direct: bool = False
    """A unicast datagram of this session has arrived (anything but an ANNOUNCE): it
    knows us, so its announcements need no answer."""
    announced: bool = False
    """This session announces itself on our LAN: its announcements keep it present, so
    it is gone only after three announcement periods of silence."""
    rooms: tuple[str, ...] | None = None
    """The rooms this session is in, as we can tell (a keyed room only when its tag
    proves it, with a key we hold); None until its HELLO or MEMBERSHIP tells us."""
    listed: tuple[str, ...] = ()
    """Its room list as the wire carried it, keyed rooms as tags."""
    keyed: dict[str, str] = field(default_factory=dict)
    """Its tag -> the keyed room it stands for, for the tags we could check."""
    rooms_version: int = -1
    """The membership version `rooms` came with: older news is ignored."""
    instance: bytes = b""
    """Its installation's instance id, as the last HELLO from this address carried it:
    kept after it leaves, since messages may be held for it (the offline outbox)."""

    def restart(self, session: bytes, keep: int) -> None:
        if self.session:
            self.retired.append(self.session)
        while len(self.retired) > keep:
            self.retired.popleft()
        self.session = session
        self.expected = None
        self.held.clear()
        self.partial.clear()
        self.partial_bytes = 0
        self.duplicate = 0
        self.heard_direct = False
        self.announced = False
        self.rooms = None
        self.listed = ()
        self.keyed = {}
        self.rooms_version = -1


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What the receive half knows of one peer (for `/peers`)."""

    peer: Address
    nick: str
    present: bool
    last_heard: float
    rooms: tuple[str, ...] = ()
    """The rooms it is in, as far as known."""
    dialect: str = "udpchat"
    """"udpchat", "raw" for a plain text peer, "ipmsg" for an IP Messenger user."""
    encoding: str = ""
    """A raw or IPMsg peer's encoding."""
    group: str = ""
    """An IPMsg user's group."""
    host: str = ""
    """An IPMsg user's host name."""
    instance: bytes = b""
    """A udpchat peer's instance id, when known."""


@dataclass(slots=True)
class _RawPeer:
    """A plain text peer: its encoding, guessed or set by the user (`forced`)."""

    encoding: str
    forced: bool
    last_heard: float


class Receiver:
    """Receive half. Feed it datagrams; drain events, notes and datagrams to send."""

    def __init__(self, session: bytes, config: Config, *, wall_offset: float = 0.0) -> None:
        """`wall_offset` turns the caller's `now` into wall-clock seconds (shared-key
        mode stamps and checks datagrams with the wall clock)."""
        self.session = session
        self.config = config
        self.stats = Stats()
        self._wall_offset = wall_offset
        self._opener: Opener | None = None
        self._sealer: Sealer | None = None
        if config.key is not None:
            from . import crypto  # only shared-key mode pays for importing cryptography

            self._opener = crypto.Opener(config.key, config.max_skew)
            self._sealer = crypto.Sealer(config.key, session, crypto.ORIGIN_RECEIVE)
        self._sources: OrderedDict[Address, list[float]] = OrderedDict()
        self._peers: dict[Address, _Peer] = {}
        self._by_session: dict[bytes, Address] = {}
        """Live session id -> the key of its peer in `_peers`."""
        self._aliases: dict[Address, Address] = {}
        """A peer's newest address, when it is not its key -> that key."""
        self._announced_timeout = max(config.peer_timeout, 3 * config.announce_period)
        """How long a peer that announces itself may be silent: three announcement
        periods, and never less than `peer_timeout`."""
        self._by_instance: OrderedDict[bytes, Address] = OrderedDict()
        """Instance id (from ANNOUNCE) -> the key of the peer that last announced it."""
        self._ack_due: set[Address] = set()
        self._outgoing: list[Outgoing] = []
        self._unverified: OrderedDict[tuple[bytes, Address], wire.Hello] = OrderedDict()
        """Shared-key mode: HELLOs sealed for anyone, kept until the PING we answered each
        with (sealed for its session) is answered by a PONG sealed for us."""
        self._events: deque[Event] = deque()
        self._notes: deque[Note] = deque()
        self._rejected_since_report = 0
        self._rejected_sources: set[Address] = set()
        self._room_keys: dict[str, RoomKey] = {}
        """Our keyed rooms' keys: what checks a peer's tags and opens its lines."""
        for room, key in config.room_keys:
            self.set_room_key(room, key)
        self._raw: OrderedDict[Address, _RawPeer] = OrderedDict()
        """Plain text peers, the least recently heard first (at most `max_peers`)."""
        self._other_versions: OrderedDict[Address, int] = OrderedDict()
        """Addresses whose other protocol version has been reported (once each)."""
        self._ipmsg: IpmsgInbound | None = None
        """IP Messenger users (only with `Config.ipmsg`, which alone pays for importing
        the dialect)."""
        if config.ipmsg:
            from .ipmsg_peers import Inbound

            self._ipmsg = Inbound(
                config,
                self._events,
                self._notes,
                lambda addr, reason, detail: self._reject(addr, reason, detail=detail),
                self.stats,
            )
        self._plain_outgoing: list[tuple[bytes, Address]] = []
        """REFUSED notices: never sealed, so a peer with another key can read them."""
        self._refusals_sent: OrderedDict[Address, float] = OrderedDict()
        self._last_report: float | None = None
        self._now = 0.0
        self._shown_keys: OrderedDict[bytes, None] = OrderedDict()
        """Keys of the messages shown last, oldest first (see `_feed`)."""

    # -- inputs ---------------------------------------------------------------

    def receive_datagram(
        self, data: bytes, addr: Address, now: float, *, announced: bool = False
    ) -> None:
        """Handle one datagram from `addr`. Never raises on its content.

        `announced`: it came to the discovery port, where only an ANNOUNCE we can read
        counts. Anything else there (chats with another key or none, other programs) is
        counted in `discovery_dropped`, never reported nor answered: a LAN may carry many
        chats that are not ours."""
        self._now = now
        self.stats.datagrams_received += 1
        self.stats.bytes_received += len(data)
        if not self._admit(addr, now):
            self.stats.rate_limited += 1
            return
        if data[2:3] != _VERSION_BYTE and data[:2] == wire.MAGIC and len(data) > 2:
            self._other_version(addr, data[2])
            return
        try:
            addressed = True
            if self._opener is not None and data[3:4] != _REFUSED_KIND:
                data, addressed = self._opener.open(data, self._wall_ms(now), self.session)
            datagram = wire.decode(data)
        except WireError as error:
            if announced:
                self.stats.discovery_dropped += 1
                return
            if error.reason is RejectReason.NOT_UDPCHAT:
                if self._ipmsg is not None and self._on_ipmsg(data, addr, now):
                    return
                if self._on_raw(data, addr, now):
                    return
            self._reject(addr, error.reason, data, error.detail)
            if error.reason in wire.REFUSAL_CODES:
                self._refuse(data, addr, error.reason, now)
            return
        if announced and not isinstance(datagram, wire.Announce):
            self.stats.discovery_dropped += 1
            return
        if datagram.session == self.session:
            # Our own datagram, sent back to us: never a peer (docs/protocol.md). Our
            # announcements come back from the group by design.
            if not isinstance(datagram, wire.Announce):
                self._reject(addr, RejectReason.OWN_SESSION)
            return
        if isinstance(datagram, wire.Announce):
            self._on_announce(datagram, addr, now, verified=addressed)
            return
        if not addressed:  # a HELLO sealed for anyone: believed once it is confirmed
            assert isinstance(datagram, wire.Hello)
            self._verify(datagram, addr)
            return
        key = self._key(datagram.session, addr)
        self._dispatch(datagram, key, addr, now)
        peer = self._peers.get(key)
        if peer is not None and peer.session == datagram.session:
            peer.heard_direct = True

    def set_room_key(self, room: str, key: bytes | None) -> None:
        """Hold `key` (a passphrase's master key) for the keyed room `room`, or none
        (None: we left it, or it is not keyed): every peer's tags are checked again, and
        those that now prove membership are reported as joining."""
        if key is None:
            self._room_keys.pop(room, None)
        else:
            from .crypto import RoomKey  # only keyed rooms pay for importing cryptography

            self._room_keys[room] = RoomKey(key, room)
        for addr, peer in self._peers.items():
            if peer.present and peer.rooms is not None and self._read_rooms(addr, peer):
                self._notes.append(RoomsNote(addr, peer.rooms))

    def add_raw_peer(self, addr: Address, now: float, encoding: str | None = None) -> None:
        """Treat `addr` as a plain text peer (`--raw-peer`, `/raw`, `/encoding`), read
        and written in `encoding` from now on, or, if None, as `Config.raw_encoding` or
        its datagrams say. LocalProtocolError in shared-key mode; ValueError for an
        encoding not in `plain.ENCODINGS`."""
        plain.check_raw_peer(encoding, keyed=self._opener is not None)
        ipmsg_peers = self._ipmsg
        if (
            encoding is not None
            and ipmsg_peers is not None
            and ipmsg_peers.set_encoding(addr, encoding)
        ):
            return  # an IP Messenger user: only its encoding changes
        raw = self._raw.get(addr)
        if raw is None:
            chosen = encoding or self.config.raw_encoding or "utf-8"
            raw = self._new_raw(addr, chosen, forced=encoding is not None, now=now)
        elif encoding is not None:
            raw.encoding, raw.forced = encoding, True
        self._notes.append(RawPeerNote(addr, raw.encoding))

    def _new_raw(self, addr: Address, encoding: str, *, forced: bool, now: float) -> _RawPeer:
        raw = self._raw[addr] = _RawPeer(encoding, forced, now)
        while len(self._raw) > self.config.max_peers:
            self._raw.popitem(last=False)
        return raw

    def _on_raw(self, data: bytes, addr: Address, now: float) -> bool:
        """A datagram that is not udpchat: a plain text peer's message if it reads as
        text (docs/protocol.md, "Plain text peers"); False to drop it as foreign. Not in
        shared-key mode, where nothing unauthenticated is shown."""
        if self._opener is not None:
            return False
        # With IPMsg on, `_on_ipmsg` has parsed it already and found it is not a packet.
        if self._ipmsg is None and plain.looks_like_ipmsg(data):
            return False
        raw = self._raw.get(addr)
        if raw is None:
            guessed = self.config.raw_encoding or plain.guess(data)
            if guessed is None:
                return False
            raw = self._new_raw(addr, guessed, forced=self.config.raw_encoding is not None, now=now)
            self._notes.append(RawPeerNote(addr, raw.encoding))
        elif not raw.forced and not plain.fits(data, raw.encoding):
            # Not what it sent before: guess again (hex when it is not text at all).
            raw.encoding = plain.guess(data) or "hex"
            self._notes.append(RawPeerNote(addr, raw.encoding))
        if not data:
            return True  # nothing to show
        self._raw.move_to_end(addr)
        raw.last_heard = now
        self.stats.raw_received += 1
        self._events.append(
            MessageReceived(
                peer=addr,
                nick="",
                text=plain.decode(data, raw.encoding),
                sent_at_ms=self._wall_ms(now),
                dialect="raw",
                encoding=raw.encoding,
            )
        )
        return True

    def _on_ipmsg(self, data: bytes, addr: Address, now: float) -> bool:
        """An IP Messenger packet: its user's presence or message (docs/protocol.md,
        "IP Messenger peers"); False when the datagram is not IPMsg at all."""
        try:
            packet = ipmsg.decode(data)
        except WireError as error:
            if error.reason is RejectReason.NOT_UDPCHAT:
                return False
            self._reject(addr, error.reason, data, error.detail)
            return True
        self.stats.ipmsg_received += 1
        assert self._ipmsg is not None
        self._ipmsg.receive(packet, addr, now, self._wall_ms(now))
        return True

    def _other_version(self, addr: Address, version: int) -> None:
        """A udpchat of another protocol version: say so once per address (it cannot
        chat with us, and silence would look like a network fault), then only count."""
        self.stats.malformed_dropped += 1
        if self._other_versions.get(addr) == version:
            self._other_versions.move_to_end(addr)
            return
        self._other_versions[addr] = version
        if len(self._other_versions) > self.config.max_sources:
            self._other_versions.popitem(last=False)
        self._events.append(VersionMismatched(peer=addr, version=version))

    def _dispatch(self, datagram: wire.Datagram, key: Address, addr: Address, now: float) -> None:
        if isinstance(datagram, wire.Ack):
            self._on_ack(datagram, key, now)
        elif isinstance(datagram, wire.Ping):
            pong = wire.encode(wire.Pong(self.session, datagram.token))
            self._outgoing.append((pong, addr, datagram.session))
            if self._touch(datagram.session, key, now) and datagram.base:
                self._on_base(key, self._peers[key], datagram.base)
        elif isinstance(datagram, wire.Pong):
            hello = self._unverified.pop((datagram.session, addr), None)
            if hello is not None and datagram.token == _VERIFY_TOKEN:
                self._on_hello(hello, key, now)
            elif self._touch(datagram.session, key, now):
                self._notes.append(PongNote(key, datagram.token))
        elif isinstance(datagram, wire.Data):
            self._on_data(datagram, key, now)
        elif isinstance(datagram, wire.Hello):
            self._on_hello(datagram, key, now)
        elif isinstance(datagram, wire.Refused):
            self._on_refused(datagram, key)
        elif isinstance(datagram, wire.Bye):
            self._on_bye(datagram, key)

    def suspect(self, peers: list[Address], now: float) -> None:
        """The send half is retransmitting to `peers`: each that has been silent for
        `suspect_after` seconds is gone ("timed out"), without waiting for `peer_timeout`
        (docs/protocol.md, "Discovery": within 15 s when we are talking to it)."""
        for addr in peers:
            peer = self._peers.get(addr)
            silent = peer is not None and now - peer.last_heard >= self.config.suspect_after
            if peer is not None and peer.present and silent:
                self._leave(addr, peer, LeaveReason.TIMED_OUT)

    def handle_timer(self, now: float) -> None:
        """Report peers that have been silent for longer than `peer_timeout`."""
        for addr, peer in self._peers.items():
            if peer.present and now >= peer.last_heard + self._timeout(peer):
                self._leave(addr, peer, LeaveReason.TIMED_OUT)

    # -- outputs --------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When `handle_timer` next has something to do, or None."""
        plain, announced = self.config.peer_timeout, self._announced_timeout
        deadlines = [
            p.last_heard + (announced if p.announced else plain)
            for p in self._peers.values()
            if p.present
        ]
        return min(deadlines) if deadlines else None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """PONGs, and one ACK per peer that sent DATA since the last call (batched)."""
        outgoing, self._outgoing = self._outgoing, []
        for addr in self._ack_due:
            peer = self._peers.get(addr)
            if peer is not None and peer.expected is not None:
                outgoing.append((self._ack_for(peer), peer.reply_to, peer.session))
        self.stats.acks_sent += len(self._ack_due)
        self._ack_due.clear()
        out = seal_all(self._sealer, outgoing, self._wall_ms(now))
        if self._plain_outgoing:
            out += self._plain_outgoing
            self._plain_outgoing = []
        for data, _ in out:
            self.stats.datagrams_sent += 1
            self.stats.bytes_sent += len(data)
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def next_note(self) -> Note | None:
        return self._notes.popleft() if self._notes else None

    def peers(self) -> list[PeerInfo]:
        rows = [
            PeerInfo(a, p.nick, p.present, p.last_heard, p.rooms or (), instance=p.instance)
            for a, p in self._peers.items()
        ]
        rows += [
            PeerInfo(a, "", True, r.last_heard, (), "raw", r.encoding) for a, r in self._raw.items()
        ]
        if self._ipmsg is not None:
            rows += [
                PeerInfo(
                    i.peer,
                    i.nick,
                    i.present,
                    i.last_heard,
                    (),
                    "ipmsg",
                    i.encoding,
                    i.group,
                    i.host,
                )
                for i in self._ipmsg.peers()
            ]
        return rows

    def farewell(self) -> FarewellNote:
        """What we received of each present peer's stream, for the BYEs we are about to
        send (docs/protocol.md, "BYE")."""
        acks = []
        for addr, peer in self._peers.items():
            if peer.present and peer.expected is not None:
                ack = wire.decode(self._ack_for(peer))
                assert isinstance(ack, wire.Ack)
                acks.append((addr, peer.session, ack.cumulative, ack.selective))
        return FarewellNote(tuple(acks))

    # -- peers ----------------------------------------------------------------

    def _wall_ms(self, now: float) -> int:
        return int((now + self._wall_offset) * 1000)

    def _admit(self, addr: Address, now: float) -> bool:
        """Token bucket for addresses that are not present peers."""
        peer = self._peers.get(self._aliases.get(addr, addr))
        if peer is not None and peer.present:
            return True
        config, sources = self.config, self._sources
        bucket = sources.get(addr)
        if bucket is None:
            bucket = sources[addr] = [config.unknown_burst, now]
            if len(sources) > config.max_sources:
                sources.popitem(last=False)
        else:
            sources.move_to_end(addr)
            elapsed, bucket[1] = now - bucket[1], now
            bucket[0] = min(config.unknown_burst, bucket[0] + elapsed * config.unknown_rate)
        if bucket[0] < 1:
            return False
        bucket[0] -= 1
        return True

    def _key(self, session: bytes, addr: Address) -> Address:
        """The key in `_peers` of the peer that sent `session` from `addr`: the key of
        that session's peer if there is one (noting its newest address), else the key
        `addr` is an alias of, else `addr` itself."""
        key = self._by_session.get(session)
        if key is None:
            return self._aliases.get(addr, addr)
        peer = self._peers[key]
        if peer.reply_to != addr:
            if peer.reply_to != key:
                self._aliases.pop(peer.reply_to, None)
            peer.reply_to = addr
            if addr != key:
                self._aliases[addr] = key
            self._notes.append(AddressNote(key, addr))
        return key

    def _touch(self, session: bytes, addr: Address, now: float) -> bool:
        """Refresh a known peer's last-heard time; False if this is not its session.

        A PING, PONG or ACK of a new session from a known peer's address is a restart,
        recognised at once: the peer is greeted, so that it learns of us too."""
        peer = self._peers.get(addr)
        if peer is not None and peer.session != session and peer.session:
            peer = self._peer(session, addr, "", now, greet=True, asked=False)
            return peer is not None
        if peer is None or peer.session != session:
            return False
        peer.last_heard = now
        if not peer.present:
            peer.present = True
            self._events.append(PeerJoined(peer=addr, nick=peer.nick))
            self._notes.append(PeerNote(addr, present=True, session=peer.session))
        return True

    def _peer(
        self,
        session: bytes,
        addr: Address,
        nick: str,
        now: float,
        *,
        greet: bool,
        asked: bool,
        hello: bool = False,
        rooms: tuple[str, ...] | None = None,
        rooms_version: int = 0,
        announced: bool = False,
        instance: bytes = b"",
    ) -> _Peer | None:
        """The peer record for (addr, session), created or restarted as needed.

        Our HELLO is sent back when `asked`, or when `greet` and the peer is new, restarted
        or returning. A `hello` always tells the send half the peer is there (it may
        be waiting for that to send), and may bring back a session that said BYE.
        `rooms` (with its `rooms_version`) is the peer's room list when the datagram
        carried one; `announced`: it came by discovery; `instance`: the instance id a
        HELLO carried. Returns None (and counts the drop) for a retired session or a full
        table.
        """
        if instance == _NO_INSTANCE:
            instance = b""
        peer = self._peers.get(addr)
        if peer is not None and hello and session == peer.ended:
            peer.retired.remove(session)
            peer.ended, peer.session, peer.expected = b"", session, None
            self._by_session[session] = addr
        if peer is not None and peer.session == session:
            peer.last_heard = now
            if instance:
                peer.instance = instance
            if announced and not peer.announced:
                peer.announced = True
                self._notes.append(AnnouncedNote(addr))
            if not peer.present:
                peer.present = True
                self._take_rooms(addr, peer, rooms, rooms_version, quiet=True)
                self._events.append(
                    PeerJoined(
                        peer=addr,
                        nick=nick or peer.nick,
                        rooms=peer.rooms or (),
                        instance=peer.instance,
                    )
                )
                self._notes.append(self._peer_note(addr, peer, greet or asked))
            else:
                # (Most calls are a DATA's, with no rooms: skip the call then.)
                news = rooms is not None and self._take_rooms(
                    addr, peer, rooms, rooms_version, quiet=False
                )
                if asked or hello:
                    self._notes.append(self._peer_note(addr, peer, asked))
                elif news:
                    self._notes.append(RoomsNote(addr, peer.rooms or ()))
            if nick and nick != peer.nick:
                if peer.nick:
                    self._events.append(PeerRenamed(peer=addr, old_nick=peer.nick, new_nick=nick))
                peer.nick = nick
            return peer
        if peer is not None:
            if session in peer.retired:
                self.stats.stale_dropped += 1
                return None
            self._by_session.pop(peer.session, None)
            self._by_session[session] = addr
            peer.restart(session, self.config.retired_sessions)
            peer.nick, peer.last_heard, peer.present = nick or peer.nick, now, True
            peer.ended = b""
            peer.announced = announced
            peer.instance = instance or peer.instance
            self._take_rooms(addr, peer, rooms, rooms_version, quiet=True)
            self._events.append(
                PeerJoined(
                    peer=addr,
                    nick=peer.nick,
                    restarted=True,
                    rooms=peer.rooms or (),
                    instance=peer.instance,
                )
            )
            self._notes.append(self._peer_note(addr, peer, greet or asked))
            return peer
        if len(self._peers) >= self.config.max_peers and not self._forget_one():
            self.stats.window_dropped += 1
            return None
        host = addr[0]
        if not _is_loopback(host):  # this machine's own chats: as many as its user runs
            at_host = sum(1 for a, p in self._peers.items() if p.present and a[0] == host)
            if at_host >= self.config.max_peers_per_host:
                self._reject(addr, RejectReason.TOO_MANY_AT_HOST, detail=host)
                return None
        peer = _Peer(session, nick, now, addr, announced=announced, instance=instance)
        self._peers[addr] = peer
        self._by_session[session] = addr
        self._take_rooms(addr, peer, rooms, rooms_version, quiet=True)
        self._events.append(
            PeerJoined(peer=addr, nick=nick, rooms=peer.rooms or (), instance=instance)
        )
        self._notes.append(self._peer_note(addr, peer, greet or asked))
        return peer

    def _peer_note(self, addr: Address, peer: _Peer, send_hello: bool) -> PeerNote:
        return PeerNote(
            addr,
            present=True,
            session=peer.session,
            send_hello=send_hello,
            nick=peer.nick,
            rooms=peer.rooms,
            announced=peer.announced,
            instance=peer.instance,
        )

    def _take_rooms(
        self,
        addr: Address,
        peer: _Peer,
        rooms: tuple[str, ...] | None,
        version: int,
        *,
        quiet: bool,
    ) -> bool:
        """Keep `rooms` as the peer's unless what we have is as new; report each room
        joined or left as an event (not when `quiet`: a PeerJoined says it all). True
        when the list changed."""
        if rooms is None or version <= peer.rooms_version:
            return False
        peer.listed, peer.rooms_version = rooms, version
        return self._read_rooms(addr, peer, quiet=quiet)

    def _read_rooms(self, addr: Address, peer: _Peer, *, quiet: bool = False) -> bool:
        """`peer.rooms` from its list: plain names as they are, a tag as the keyed room
        it proves for this session, other tags left out (not our business). Reports
        each change as an event unless `quiet`; True when the rooms changed."""
        proofs = {key.tag(peer.session): room for room, key in self._room_keys.items()}
        keyed = {tag: proofs[tag] for tag in peer.listed if tag in proofs}
        # A plain room that has the name of one of our keyed rooms is another room, and
        # we are not in it: its members are not shown as members of ours.
        ours = self._room_keys
        readable = [keyed.get(e, e) for e in peer.listed if e in keyed or e not in ours]
        rooms = tuple(dict.fromkeys(room for room in readable if not is_tag(room)))
        old, peer.keyed = peer.rooms, keyed
        peer.rooms = rooms
        if old == rooms:
            return False
        if not quiet:
            before = set(old or ())
            for room in rooms:
                if room not in before:
                    self._events.append(MemberJoined(peer=addr, nick=peer.nick, room=room))
            for room in old or ():
                if room not in rooms:
                    self._events.append(MemberLeft(peer=addr, nick=peer.nick, room=room))
        return True

    def _forget_one(self) -> bool:
        absent = [(p.last_heard, a) for a, p in self._peers.items() if not p.present]
        if not absent:
            return False
        addr = min(absent)[1]
        peer = self._peers.pop(addr)
        self._by_session.pop(peer.session, None)
        self._aliases.pop(peer.reply_to, None)
        return True

    def _leave(self, addr: Address, peer: _Peer, reason: LeaveReason) -> None:
        peer.present = False
        self._events.append(PeerLeft(peer=addr, nick=peer.nick, reason=reason))
        bye = reason is LeaveReason.BYE
        self._notes.append(PeerNote(addr, present=False, bye=bye, nick=peer.nick))

    # -- datagram kinds -------------------------------------------------------

    def _verify(self, hello: wire.Hello, addr: Address) -> None:
        """Shared-key mode: a HELLO sealed for anyone may be a copy replayed from any
        address, so it changes nothing yet. It is answered with a PING sealed for its
        session; only the real sender at `addr` can answer that with a PONG sealed for
        us, and that PONG lets the HELLO in (docs/protocol.md, "Shared-key mode")."""
        self._unverified[(hello.session, addr)] = hello
        self._unverified.move_to_end((hello.session, addr))
        if len(self._unverified) > _UNVERIFIED_KEPT:
            self._unverified.popitem(last=False)
        ping = wire.encode(wire.Ping(self.session, _VERIFY_TOKEN, 0))
        self._outgoing.append((ping, addr, hello.session))

    def _on_announce(
        self, announce: wire.Announce, addr: Address, now: float, *, verified: bool
    ) -> None:
        """An announcement from the discovery group (docs/protocol.md, "Discovery"). A
        peer that has talked to us directly is only kept present by it; anyone else is
        answered as a HELLO that asks for a reply would be (in shared-key mode, once
        confirmed), so that it learns of us by unicast. A lost answer is made good by its
        next announcement."""
        self.stats.announcements_received += 1
        known = self._by_session.get(announce.session)
        if known is not None:
            peer = self._peers[known]
            if peer.present and peer.heard_direct:
                # Sealed for anyone, it is still that session's own (the key and the
                # replay window say so) when it comes from where the peer is.
                if verified or addr == peer.reply_to:
                    peer.last_heard = now
                    self._mark_announced(known, peer)
                    self._remember_instance(announce.instance, known)
                    rooms, version = announce.rooms, announce.rooms_version
                    if self._take_rooms(known, peer, rooms, version, quiet=False):
                        self._notes.append(RoomsNote(known, peer.rooms or ()))
                return
        hello = wire.Hello(
            announce.session,
            announce.nick,
            True,
            announce.rooms_version,
            announce.rooms,
            instance=announce.instance,
        )
        if not verified:
            self._verify(hello, addr)
            return
        key = self._key(announce.session, addr)
        self._restarted_elsewhere(announce, key)
        self._on_hello(hello, key, now, announced=True)
        joined = self._peers.get(key)
        if joined is not None and joined.session == announce.session:
            self._remember_instance(announce.instance, key)

    def _restarted_elsewhere(self, announce: wire.Announce, key: Address) -> None:
        """A new session of an installation we know, from another address (a new port,
        a new DHCP lease): its old session is gone at once, not after its timeout
        (docs/protocol.md, "Discovery"). At the same address, the usual restart rule
        applies."""
        old_key = self._by_instance.get(announce.instance)
        if old_key is None or old_key == key or announce.instance == bytes(8):
            return
        old = self._peers.get(old_key)
        if old is not None and old.present and old.session != announce.session:
            self._leave(old_key, old, LeaveReason.RESTARTED_ELSEWHERE)

    def _remember_instance(self, instance: bytes, key: Address) -> None:
        if instance == bytes(8):  # no instance id: a chat that keeps none
            return
        self._by_instance[instance] = key
        self._by_instance.move_to_end(instance)
        while len(self._by_instance) > self.config.max_peers:
            self._by_instance.popitem(last=False)

    def _mark_announced(self, key: Address, peer: _Peer) -> None:
        if not peer.announced:
            peer.announced = True
            self._notes.append(AnnouncedNote(key))

    def _timeout(self, peer: _Peer) -> float:
        """How long `peer` may be silent before it is gone (docs/protocol.md, PING and
        "Discovery")."""
        return self._announced_timeout if peer.announced else self.config.peer_timeout

    def _on_hello(
        self,
        hello: wire.Hello,
        addr: Address,
        now: float,
        *,
        announced: bool = False,
    ) -> None:
        # A HELLO that asks for none is itself a reply: answering it would never end.
        wants = hello.wants_reply
        self._peer(
            hello.session,
            addr,
            hello.nick,
            now,
            greet=wants,
            asked=wants,
            hello=True,
            rooms=None if hello.rooms_follow else hello.rooms,
            rooms_version=hello.rooms_version,
            announced=announced,
            instance=hello.instance,
        )

    def _refuse(self, data: bytes, addr: Address, reason: RejectReason, now: float) -> None:
        """Tell a udpchat whose datagram failed our shared-key checks, at most once per
        `reject_report_interval` per address, in a reply never larger than the datagram."""
        if data[:2] != wire.MAGIC or len(data) < wire.REFUSED_SIZE:
            return
        last = self._refusals_sent.get(addr)
        if last is not None and now < last + self.config.reject_report_interval:
            return
        self._refusals_sent[addr] = now
        self._refusals_sent.move_to_end(addr)
        if len(self._refusals_sent) > self.config.max_sources:
            self._refusals_sent.popitem(last=False)
        refusal = wire.encode(wire.Refused(self.session, reason))
        self._plain_outgoing.append((refusal, addr))

    def _on_refused(self, refused: wire.Refused, addr: Address) -> None:
        peer = self._peers.get(addr)
        if peer is None or not peer.present:
            self._events.append(DatagramsRefused(peer=addr, reason=refused.reason))
        # From a present peer this is forged, or the peer restarted and can no longer
        # open what we seal for its old session: the send half greets whoever is there.
        self._notes.append(RefusedNote(addr, refused.reason))

    def _on_bye(self, bye: wire.Bye, addr: Address) -> None:
        peer = self._peers.get(addr)
        if peer is None or peer.session != bye.session:
            return
        if bye.acked_session == self.session:
            # What it received, taken before it leaves: nothing it had is reported failed.
            self._notes.append(AckNote(addr, bye.cumulative, bye.selective))
        if peer.present:
            self._leave(addr, peer, LeaveReason.BYE)
        # The session is over: late datagrams of it are stale from now on.
        self._by_session.pop(bye.session, None)
        peer.restart(bye.session, self.config.retired_sessions)
        peer.session, peer.ended = b"", bye.session

    def _on_ack(self, ack: wire.Ack, addr: Address, now: float) -> None:
        current = self._touch(ack.session, addr, now)
        if ack.acked_session != self.session:
            self.stats.stale_dropped += 1
            return
        self.stats.acks_received += 1
        # (Looked up only off the common path: every ACK of a current session skips it.)
        peer = None if current else self._peers.get(addr)
        if peer is not None and ack.session in peer.retired:
            # Sent before the peer restarted, and late: what it had shown counts, what
            # it held died with it (docs/protocol.md, "Restarts and the offline outbox").
            self._notes.append(AckNote(addr, ack.cumulative, 0, 0))
            return
        self._notes.append(AckNote(addr, ack.cumulative, ack.selective, ack.duplicate))

    def _on_data(self, data: wire.Data, addr: Address, now: float) -> None:
        # DATA from a peer that has not heard our HELLO: greet it, so it learns our nick.
        peer = self._peer(data.session, addr, data.nick, now, greet=True, asked=False)
        if peer is None:
            return
        self._ack_due.add(addr)
        if peer.expected is None:
            peer.expected = data.base
        elif data.base > peer.expected:
            self._skip_to(addr, peer, data.base)
        expected = peer.expected
        if data.seq < expected or data.seq in peer.held:
            self.stats.duplicates_dropped += 1
            peer.duplicate = max(peer.duplicate, data.seq + 1)
            return
        if data.seq >= expected + self.config.receive_window:
            self.stats.window_dropped += 1
            return
        peer.held[data.seq] = data
        while expected in peer.held:
            self._feed(addr, peer, peer.held.pop(expected))
            expected += 1
        peer.expected = expected

    def _on_base(self, addr: Address, peer: _Peer, base: int) -> None:
        """A PING told us the sender's base: nothing below it will come any more."""
        if peer.expected is None:
            peer.expected = base
        elif base > peer.expected:
            self._skip_to(addr, peer, base)
            self._ack_due.add(addr)

    def _skip_to(self, addr: Address, peer: _Peer, base: int) -> None:
        """The sender gave up below `base`: deliver what we hold there, skip the gaps."""
        assert peer.expected is not None
        for seq in sorted(s for s in peer.held if s < base):
            if seq != peer.expected:
                self._drop_partial(peer)
            self._feed(addr, peer, peer.held.pop(seq))
            peer.expected = seq + 1
        if peer.expected < base:
            self._drop_partial(peer)
        peer.expected = base
        # What is held from base on may now be next in line. Deliver it here, not only
        # when a new seq arrives: the datagram that moved base may be one already held,
        # and ACKs assume the expected seq is never held.
        while peer.expected in peer.held:
            self._feed(addr, peer, peer.held.pop(peer.expected))
            peer.expected += 1

    def _drop_partial(self, peer: _Peer) -> None:
        peer.partial.clear()
        peer.partial_bytes = 0

    def _feed(self, addr: Address, peer: _Peer, fragment: wire.Data) -> None:
        """Add the next in-order fragment to the message being reassembled."""
        partial = peer.partial
        if fragment.fragment_index == 0:
            if partial:
                self._reject(addr, RejectReason.MESSAGE_CUT_SHORT)
            self._drop_partial(peer)
        elif not partial:
            return  # the rest of a message whose start the sender gave up on
        elif (
            partial[-1].fragment_index + 1 != fragment.fragment_index
            or partial[0].fragment_count != fragment.fragment_count
        ):
            self._reject(addr, RejectReason.FRAGMENTS_OUT_OF_ORDER)
            self._drop_partial(peer)
            return
        partial.append(fragment)
        peer.partial_bytes += len(fragment.payload)
        if peer.partial_bytes > wire.MAX_MESSAGE_BYTES:
            self._reject(addr, RejectReason.MESSAGE_TOO_LONG)
            self._drop_partial(peer)
            return
        if len(partial) < partial[0].fragment_count:
            return
        first = partial[0]
        raw = b"".join(f.payload for f in partial)
        self._drop_partial(peer)
        room = first.room
        if room[:1] == TAG_PREFIX:
            opened = self._open_keyed(addr, peer, first, raw)
            if opened is None:
                return
            room, raw = opened
        elif self._room_keys and room in self._room_keys:
            # Said in clear under the name of one of our keyed rooms: not a line of it.
            self._reject(addr, RejectReason.AUTHENTICATION_FAILED, detail="keyed room")
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._reject(addr, RejectReason.TEXT_NOT_UTF8)
            return
        if self.config.transform is not None:
            text = self.config.transform.incoming(text)
        conversation = first.conversation
        if conversation is wire.Conversation.MEMBERSHIP or conversation is wire.Conversation.ROSTER:
            self._on_control(addr, peer, first, text)
            return
        key = first.key
        if key == _NO_KEY:
            key = b""
        else:
            # A message whose key was shown lately: a restarted sender sends again what
            # it had no acknowledgement for, and its outbox what waited for us. It is
            # acknowledged as any message is, but shown once (the history, where there
            # is one, remembers beyond `Config.keys_remembered`).
            shown = self._shown_keys
            if key in shown:
                self.stats.messages_repeated += 1
                return
            shown[key] = None
            if len(shown) > self.config.keys_remembered:
                shown.popitem(last=False)
        self.stats.messages_received += 1
        self._events.append(
            MessageReceived(
                peer=addr,
                nick=first.nick,
                text=text,
                sent_at_ms=first.sent_at_ms,
                room=room,
                key=key,
            )
        )

    def _open_keyed(
        self, addr: Address, peer: _Peer, first: wire.Data, raw: bytes
    ) -> tuple[str, bytes] | None:
        """A keyed room's line: (the room, its text), or None (counted and reported)
        when the tag is not one we can check or the text does not open."""
        room = peer.keyed.get(first.room)
        key = self._room_keys.get(room) if room is not None else None
        if room is None or key is None or first.conversation is not wire.Conversation.ROOM:
            self._reject(addr, RejectReason.AUTHENTICATION_FAILED, detail="keyed room")
            return None
        associated = room_associated_data(peer.session, self.session, first.room, first.seq)
        try:
            return room, key.open(raw, associated)
        except WireError as error:
            self._reject(addr, error.reason, detail="keyed room")
            return None

    def _on_control(self, addr: Address, peer: _Peer, first: wire.Data, text: str) -> None:
        """A MEMBERSHIP or ROSTER message (docs/protocol.md, "Rooms")."""
        try:
            if first.conversation is wire.Conversation.MEMBERSHIP:
                version, rooms = decode_membership(text)
                if peer.present and self._take_rooms(addr, peer, rooms, version, quiet=False):
                    self._notes.append(RoomsNote(addr, peer.rooms or ()))
                return
            members = decode_roster(text)
        except WireError as error:
            self._reject(addr, error.reason, detail=error.detail)
            return
        # Only from a member of that room: a stranger's roster would make us greet
        # whatever addresses it lists.
        if peer.present and first.room in (peer.rooms or ()):
            self._notes.append(IntroducedNote(addr, first.room, tuple(members)))

    def _ack_for(self, peer: _Peer) -> bytes:
        expected = peer.expected
        assert expected is not None
        bits = 0
        for seq in peer.held:
            offset = seq - expected - 1
            if offset < 64:
                bits |= 1 << offset
        duplicate, peer.duplicate = peer.duplicate, 0
        return wire.encode(wire.Ack(self.session, peer.session, expected, bits, duplicate))

    # -- rejects --------------------------------------------------------------

    def _reject(
        self, addr: Address, reason: RejectReason, data: bytes = b"", detail: str = ""
    ) -> None:
        """Count a dropped datagram; report the drops at most once per interval."""
        counter = reason.counter.value
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        self._rejected_since_report += 1
        sources = self._rejected_sources
        if len(sources) < _SOURCES_COUNTED:
            sources.add(addr)
        now, last = self._now, self._last_report
        if last is not None and now < last + self.config.reject_report_interval:
            return
        self._last_report = now
        self._events.append(
            DatagramRejected(
                peer=addr,
                reason=reason,
                detail=detail,
                count=self._rejected_since_report,
                sources=len(sources),
                preview=_preview(data) if reason is RejectReason.NOT_UDPCHAT else "",
            )
        )
        self._rejected_since_report = 0
        sources.clear()


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1, or 127.x.y.z mapped into IPv6 (a dual-stack socket's view)."""
    return host.startswith(("127.", "::ffff:127.")) or host == "::1"


def _preview(data: bytes) -> str:
    """Show a foreign datagram as text: plain tools send UTF-8, Windows ones often GBK."""
    head = data[:_PREVIEW_BYTES]
    # When the cut at 80 bytes falls inside a character, that character is left out
    # rather than taken as proof that the text is in another encoding.
    cut_short = len(data) > _PREVIEW_BYTES
    for encoding in ("utf-8", "gbk"):
        try:
            return codecs.getincrementaldecoder(encoding)().decode(head, final=not cut_short)
        except UnicodeDecodeError:
            continue
    return head.decode("utf-8", errors="replace")
