"""IP Messenger users as peers: presence and messages in the IPMsg dialect
(docs/protocol.md, "IP Messenger peers"). Pure, like the rest of the core.

The receive half owns an `Inbound`: the table of IPMsg users (bounded, one per IP
address, as IPMsg clients know each other by address), what their packets mean, and the
notes that tell the send half what to answer. The send half owns an `Outbound`: every
IPMsg packet we send (entry packets, messages, answers), so that all of them take their
numbers from one increasing counter (iptux drops a message numbered no higher than the
last packet it took from us).

Rules:
- `BR_ENTRY` is broadcast at start and once more 2 s later (a broadcast is easily lost and
  never retransmitted); every `BR_ENTRY` heard is answered by a unicast `ANSENTRY`.
  `BR_EXIT` goes out on close, `BR_ABSENCE` on a new nickname. The repeated `BR_ENTRY` and
  `BR_ABSENCE` wait while a message is in flight: an entry packet makes iptux forget the
  last message number it took from us, and it would show a retransmission twice.
- A message is `SENDMSG|SENDCHECKOPT`, with `UTF8OPT` and UTF-8 text to a peer that
  advertised `CAPUTF8OPT`, else in the peer's encoding. It is sent again, with the same
  packet number, until a `RECVMSG` carrying that number comes back. One message per peer
  is in flight at a time: iptux shows a message only if its number is above every
  message number it has taken from us, so a retransmission overtaken by a later message
  would be acknowledged and never shown. The give-up (`give_up_after`) counts from a
  message's first copy; when it comes, the user has answered nothing for that long, and
  the messages queued behind fail with it.
- A `SENDMSG` that asks is answered with `RECVMSG` (never one with `BROADCASTOPT` or
  `AUTORETOPT`), every copy of it; it is shown once, remembered over a window of packet
  numbers per peer (`ipmsg.Seen`).
- Entry packets marked with a udpchat session (`UC:` in the UTF-8 fields) are our own,
  looped back by the broadcast, or another udpchat's, which speaks udpchat's own
  protocol to us: neither becomes an IPMsg peer.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from . import ipmsg, plain
from .config import Config, Stats
from .errors import LocalProtocolError, RejectReason
from .events import (
    Address,
    DeliveryFailed,
    Event,
    FileOffered,
    LeaveReason,
    MessageDelivered,
    MessageReceived,
    PeerJoined,
    PeerLeft,
    PeerRenamed,
)
from .notes import IpmsgAckNote, IpmsgAnswerNote, IpmsgPeerNote, Note

DIALECT = "ipmsg"
FIRST_RETRY = 0.5
"""Seconds before the first retransmission of a message; then doubling, up to
`Config.max_rto`. IPMsg clients answer at once; 0.5 s spares a slow one a duplicate."""
ENTRY_REPEAT = 2.0
"""Seconds after the first `BR_ENTRY` at which the one repeat goes."""
MAX_TEXT = 8000
"""Bytes of message text we send in one packet: iptux reads at most 8 KiB."""
MAX_NICK = 64
"""Characters of an IPMsg user's nickname or group kept (real ones are short)."""
MARK_KEY = "UC"
"""The key in the UTF-8 entry fields that carries a udpchat session id."""
DEFAULT_ENCODING = "gb18030"
"""How a peer that did not say otherwise is written to without UTF-8: GBK, the code page
of FeiQ and 飞鸽传书 (GB18030 is its superset)."""
_NAMED_ENCODINGS = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "gbk": "gbk",
    "gb2312": "gbk",
    "cp936": "gbk",
    "gb18030": "gb18030",
    "cp932": "cp932",
    "shift_jis": "cp932",
    "sjis": "cp932",
}
"""Encodings an entry may name (iptux writes its own after the icon), as we call them."""


@dataclass(slots=True)
class _Peer:
    nick: str
    group: str
    host: str
    encoding: str
    forced: bool
    """The user chose the encoding (`/encoding`): never guessed again."""
    utf8: bool
    """It advertised CAPUTF8OPT: we write to it in UTF-8 with UTF8OPT."""
    last_heard: float
    present: bool = True


@dataclass(frozen=True, slots=True)
class IpmsgPeerInfo:
    peer: Address
    nick: str
    present: bool
    last_heard: float
    encoding: str
    group: str
    host: str


class Inbound:
    """The receive half's IPMsg users. Feed it decoded packets; it appends events and
    notes to the deques it was given."""

    def __init__(
        self,
        config: Config,
        events: deque[Event],
        notes: deque[Note],
        reject: Callable[[Address, RejectReason, str], None],
        stats: Stats,
    ) -> None:
        self._config = config
        self._events = events
        self._notes = notes
        self._reject = reject
        self._stats = stats
        self._peers: OrderedDict[Address, _Peer] = OrderedDict()
        """IPMsg users, the least recently heard first (at most `max_peers`)."""
        self._by_ip: dict[str, Address] = {}
        self._seen = ipmsg.Seen(peers=config.max_peers)

    def knows(self, addr: Address) -> bool:
        return addr in self._peers

    def receive(self, packet: ipmsg.Packet, addr: Address, now: float, wall_ms: int) -> None:
        mode = packet.mode
        if mode in (ipmsg.BR_ENTRY, ipmsg.ANSENTRY, ipmsg.BR_ABSENCE):
            self._on_entry(packet, addr, now)
        elif mode == ipmsg.BR_EXIT:
            peer = self._peers.get(addr)
            if peer is not None and peer.present:
                peer.present = False
                self._events.append(PeerLeft(peer=addr, nick=peer.nick, reason=LeaveReason.BYE))
                self._notes.append(IpmsgPeerNote(addr, False, peer.nick))
        elif mode == ipmsg.SENDMSG:
            self._on_message(packet, addr, now, wall_ms)
        elif mode == ipmsg.RECVMSG:
            number = packet.extra.split(b"\0", 1)[0].strip()
            if not number.isdigit() or len(number) > 20:
                self._reject(addr, RejectReason.BAD_VALUE, "IPMsg RECVMSG")
                return
            self._notes.append(IpmsgAckNote(addr, int(number)))
        # Other commands (READMSG, GETINFO, lists, keys, files) ask for nothing we offer.

    def set_encoding(self, addr: Address, encoding: str) -> bool:
        """Read and write `addr` in `encoding` from now on (`/encoding`); False when it
        is not an IPMsg peer."""
        peer = self._peers.get(addr)
        if peer is None:
            return False
        peer.encoding, peer.forced = encoding, True
        self._notes.append(self._peer_note(addr, peer))
        return True

    def peers(self) -> list[IpmsgPeerInfo]:
        return [
            IpmsgPeerInfo(a, p.nick, p.present, p.last_heard, p.encoding, p.group, p.host)
            for a, p in self._peers.items()
        ]

    # -- packets --------------------------------------------------------------

    def _on_entry(self, packet: ipmsg.Packet, addr: Address, now: float) -> None:
        fields = ipmsg.read_fields(packet.extra)
        if MARK_KEY in fields:
            return  # a udpchat: ours looped back, or one we talk to in udpchat's protocol
        peer = self._peers.get(addr)
        encoding = peer.encoding if peer is not None else self._entry_encoding(packet)
        entry = ipmsg.read_entry(packet.extra, encoding)
        host = _clean(fields.get("HN") or packet.host.decode(encoding, "backslashreplace"))
        nick = _clean(entry.nick) or _clean(packet.user.decode(encoding, "backslashreplace"))
        nick = nick or host or addr[0]
        utf8 = bool(packet.options & ipmsg.CAPUTF8OPT)
        answer = packet.mode == ipmsg.BR_ENTRY
        if peer is None:
            peer = self._add(addr, nick, _clean(entry.group), host, encoding, utf8, now)
            self._notes.append(self._peer_note(addr, peer, answer))
            return
        peer.last_heard, peer.utf8, peer.group, peer.host = now, utf8, _clean(entry.group), host
        self._peers.move_to_end(addr)
        if not peer.present:
            peer.present, peer.nick = True, nick
            self._joined(addr, peer)
        elif nick != peer.nick:
            old, peer.nick = peer.nick, nick
            self._events.append(PeerRenamed(peer=addr, old_nick=old, new_nick=nick))
        self._notes.append(self._peer_note(addr, peer, answer))

    def _entry_encoding(self, packet: ipmsg.Packet) -> str:
        """The encoding a new peer's entry names (iptux: after its icon), else ours."""
        parts = packet.extra.partition(b"\0\n")[0].split(b"\0")
        if len(parts) >= 4:
            named = _NAMED_ENCODINGS.get(parts[3].decode("ascii", "replace").strip().lower())
            if named is not None:
                return named
        return self._config.raw_encoding or DEFAULT_ENCODING

    def _add(
        self,
        addr: Address,
        nick: str,
        group: str,
        host: str,
        encoding: str,
        utf8: bool,
        now: float,
    ) -> _Peer:
        old = self._by_ip.get(addr[0])
        if old is not None and old != addr:
            # One IPMsg user per IP address, as the clients themselves assume: a new
            # port there is that user come back, or someone making up users.
            gone = self._peers.pop(old, None)
            if gone is not None and gone.present:
                self._events.append(
                    PeerLeft(peer=old, nick=gone.nick, reason=LeaveReason.RESTARTED_ELSEWHERE)
                )
                self._notes.append(IpmsgPeerNote(old, False, gone.nick))
        forced = self._config.raw_encoding is not None
        peer = self._peers[addr] = _Peer(nick, group, host, encoding, forced, utf8, now)
        self._by_ip[addr[0]] = addr
        while len(self._peers) > self._config.max_peers:
            forgotten, gone = self._peers.popitem(last=False)
            self._by_ip.pop(forgotten[0], None)
            if gone.present:
                self._notes.append(IpmsgPeerNote(forgotten, False, gone.nick))
        self._joined(addr, peer)
        return peer

    def _joined(self, addr: Address, peer: _Peer) -> None:
        self._events.append(
            PeerJoined(peer=addr, nick=peer.nick, dialect=DIALECT, group=peer.group, host=peer.host)
        )

    def _peer_note(self, addr: Address, peer: _Peer, answer: bool = False) -> IpmsgPeerNote:
        return IpmsgPeerNote(addr, True, peer.nick, peer.utf8, peer.encoding, answer)

    def _on_message(self, packet: ipmsg.Packet, addr: Address, now: float, wall_ms: int) -> None:
        peer = self._peers.get(addr)
        if peer is None:
            # A message before any entry packet (we started after it did): it is a peer.
            encoding = self._config.raw_encoding or DEFAULT_ENCODING
            user = _clean(packet.user.decode(encoding, "backslashreplace"))
            host = _clean(packet.host.decode(encoding, "backslashreplace"))
            peer = self._add(addr, user or host or addr[0], "", host, encoding, False, now)
            self._notes.append(self._peer_note(addr, peer))
        peer.last_heard = now
        self._peers.move_to_end(addr)
        options = packet.options
        if ipmsg.must_answer(packet) or (
            options & ipmsg.SECRETOPT and not options & (ipmsg.BROADCASTOPT | ipmsg.AUTORETOPT)
        ):
            read = bool(options & ipmsg.SECRETOPT)
            self._notes.append(
                IpmsgAnswerNote(addr, packet.number, ipmsg.must_answer(packet), read)
            )
        if not self._seen.first_time(addr, packet.number):
            self._stats.duplicates_dropped += 1
            return
        text_bytes, _, attachments = packet.extra.partition(b"\0")
        utf8 = bool(options & ipmsg.UTF8OPT)
        if (
            not utf8
            and not peer.forced
            and text_bytes
            and not plain.fits(text_bytes, peer.encoding)
        ):
            guessed = plain.guess(text_bytes)
            if guessed is not None:
                peer.encoding = guessed
                self._notes.append(self._peer_note(addr, peer))
        encoding = "utf-8" if utf8 else peer.encoding
        text = ipmsg.message_text(packet, encoding if encoding != "hex" else "latin-1")
        self._stats.messages_received += 1
        if text:
            self._events.append(
                MessageReceived(
                    peer=addr,
                    nick=peer.nick,
                    text=text,
                    sent_at_ms=wall_ms,
                    dialect=DIALECT,
                    encoding=encoding,
                )
            )
        if options & ipmsg.FILEATTACHOPT:
            for name, size in ipmsg.read_files(attachments, encoding):
                self._events.append(FileOffered(peer=addr, nick=peer.nick, name=name, size=size))


def _clean(text: str) -> str:
    """A name as shown: control characters out, at most MAX_NICK characters."""
    return "".join(c for c in text if c.isprintable()).strip()[:MAX_NICK]


@dataclass(slots=True)
class _Message:
    message_id: int
    text: str
    queued_at: float
    number: int = 0
    """Its packet number once sent (every copy carries the same)."""
    first_sent: float | None = None
    """When its first copy left: the give-up counts from there."""
    data: bytes = b""
    tries: int = 0
    retry_at: float = 0.0


@dataclass(slots=True)
class _Target:
    nick: str
    utf8: bool
    encoding: str
    queue: deque[_Message] = field(default_factory=deque)
    """Its messages, the one in flight first."""


class Outbound:
    """The send half's IPMsg side: entry packets, messages with their retransmission
    and give-up, and the answers the receive half asks for."""

    def __init__(
        self, config: Config, session: bytes, nick: str, wall_offset: float, stats: Stats
    ) -> None:
        self._config = config
        self._stats = stats
        self._mark = session.hex()
        """What our entry packets carry under MARK_KEY."""
        self._nick = nick
        self._wall_offset = wall_offset
        self._numbers: ipmsg.PacketNumbers | None = None
        self._targets: dict[Address, _Target] = {}
        self._outgoing: list[tuple[bytes, Address]] = []
        self._events: deque[Event] = deque()
        self._pending = 0
        self._entry_at: list[float] | None = None
        """When the start-up BR_ENTRYs are due, from the first call that knows the time."""
        self._broadcasts_due: list[int] = []
        """Entry packets to broadcast at the next drain (BR_ABSENCE, BR_EXIT)."""

    # -- the send half's calls ------------------------------------------------

    def knows(self, addr: Address) -> bool:
        return addr in self._targets

    def pending(self) -> int:
        return self._pending

    def pending_by_peer(self) -> list[tuple[Address, int]]:
        return [(addr, len(t.queue)) for addr, t in self._targets.items()]

    def set_nick(self, nick: str) -> None:
        """Our new nickname, told to the LAN (BR_ABSENCE) at the next drain."""
        self._nick = nick
        if self._config.ipmsg:
            self._broadcasts_due.append(ipmsg.BR_ABSENCE)

    def close(self) -> None:
        """Say BR_EXIT, at the next drain, to the LAN and to every IPMsg user we know."""
        if self._config.ipmsg:
            self._broadcasts_due.append(ipmsg.BR_EXIT)
        self._entry_at = []

    def handle_note(self, note: IpmsgPeerNote | IpmsgAnswerNote | IpmsgAckNote, now: float) -> None:
        match note:
            case IpmsgPeerNote(peer=addr, present=True):
                target = self._targets.get(addr)
                if target is None:
                    target = self._targets[addr] = _Target(note.nick, note.utf8, note.encoding)
                    while len(self._targets) > self._config.max_peers:
                        self._forget(next(iter(self._targets)), now, "forgotten")
                target.nick, target.utf8, target.encoding = note.nick, note.utf8, note.encoding
                if note.answer_entry:
                    self._outgoing.append((self._entry_packet(ipmsg.ANSENTRY, now), addr))
            case IpmsgPeerNote(peer=addr):
                target = self._targets.get(addr)
                if target is not None:
                    self._forget(addr, now, f"{target.nick} left")
            case IpmsgAnswerNote():
                if note.received:
                    self._answer(ipmsg.RECVMSG, note.number, note.peer, now)
                if note.read:
                    self._answer(ipmsg.READMSG, note.number, note.peer, now)
            case IpmsgAckNote():
                self._acked(note.peer, note.number, now)

    def check(self, text: str, to: list[Address]) -> None:
        """LocalProtocolError when `text` does not fit in one packet to each of `to`."""
        for addr in to:
            if len(self._encode_text(text, self._targets[addr])) > MAX_TEXT:
                raise LocalProtocolError(
                    f"a message to an IP Messenger user holds at most {MAX_TEXT} bytes"
                )

    def send(self, message_id: int, text: str, to: list[Address], now: float) -> None:
        """Queue `text` for the IPMsg users in `to` (each known: `knows`; `check`
        first)."""
        for addr in to:
            target = self._targets[addr]
            target.queue.append(_Message(message_id, text, now))
            self._pending += 1
            if len(target.queue) == 1:
                self._transmit(addr, target, now)

    def handle_timer(self, now: float) -> None:
        if self._entry_at is None:
            due = self._config.ipmsg and self._config.ipmsg_broadcast
            self._entry_at = [now, now + ENTRY_REPEAT] if due else []
        while self._entry_at and self._entry_at[0] <= now:
            self._entry_at.pop(0)
            if not self._busy():  # see `_busy`: the repeat is not worth a duplicate
                self._broadcast(ipmsg.BR_ENTRY, now)
        for addr, target in self._targets.items():
            head = target.queue[0] if target.queue else None
            if head is None:
                continue
            if head.first_sent is not None and head.first_sent + self._give_up <= now:
                # Silent for the whole give-up: what waits behind it fails with it, rather
                # than each in turn for as long again.
                reason = f"no acknowledgement within {self._give_up:g} s"
                while target.queue:
                    self._fail(addr, target.queue.popleft(), now, reason)
            elif head.retry_at <= now:
                self._transmit(addr, target, now)

    def get_timer(self) -> float | None:
        if self._entry_at is None:
            # At once: the first BR_ENTRY.
            times = [0.0] if self._config.ipmsg and self._config.ipmsg_broadcast else []
        else:
            times = self._entry_at[:1]
        for target in self._targets.values():
            if target.queue:
                head = target.queue[0]
                times.append(head.retry_at)
                if head.first_sent is not None:
                    times.append(head.first_sent + self._give_up)
        return min(times) if times else None

    @property
    def _give_up(self) -> float:
        return self._config.give_up_after

    def _busy(self) -> bool:
        """A message is in flight. An entry packet then waits: iptux forgets the last
        message number it took from us when we send one, and would show a
        retransmission of the message in flight a second time."""
        return any(target.queue for target in self._targets.values())

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        closing = ipmsg.BR_EXIT in self._broadcasts_due
        if closing or not self._busy():
            for mode in self._broadcasts_due:
                self._broadcast(mode, now)
                if mode == ipmsg.BR_EXIT:
                    data = self._entry_packet(mode, now)
                    self._outgoing += [(data, addr) for addr in self._targets]
            self._broadcasts_due.clear()
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # -- internals ------------------------------------------------------------

    def _number(self, now: float) -> int:
        wall = now + self._wall_offset
        if self._numbers is None:
            self._numbers = ipmsg.PacketNumbers(wall)
        return self._numbers.next(wall)

    def _packet(self, number: int, command: int, extra: bytes) -> bytes:
        config = self._config
        return ipmsg.encode(
            ipmsg.Packet(
                ipmsg.VERSION,
                number,
                ipmsg.safe_name(config.ipmsg_user).encode("utf-8", "replace"),
                ipmsg.safe_name(config.ipmsg_host).encode("utf-8", "replace"),
                command,
                extra,
            )
        )

    def _entry_packet(self, mode: int, now: float) -> bytes:
        config = self._config
        extra = ipmsg.entry_extra(
            self._nick,
            config.ipmsg_group,
            config.ipmsg_user,
            config.ipmsg_host,
            config.raw_encoding or DEFAULT_ENCODING,
            mark=(MARK_KEY, self._mark),
        )
        return self._packet(self._number(now), mode | ipmsg.CAPUTF8OPT, extra)

    def _broadcast(self, mode: int, now: float) -> None:
        if self._config.ipmsg_broadcast:
            data = self._entry_packet(mode, now)
            self._outgoing += [(data, addr) for addr in self._config.ipmsg_broadcast]

    def _answer(self, mode: int, number: int, addr: Address, now: float) -> None:
        command = mode | ipmsg.CAPUTF8OPT
        self._outgoing.append(
            (self._packet(self._number(now), command, str(number).encode()), addr)
        )

    def _encode_text(self, text: str, target: _Target) -> bytes:
        text = text.replace("\n", "\r\n") if not target.utf8 else text
        if target.utf8 or target.encoding == "hex":
            return text.encode("utf-8")
        return text.encode(target.encoding, errors="replace")

    def _transmit(self, addr: Address, target: _Target, now: float) -> None:
        message = target.queue[0]
        if not message.data:
            message.number = self._number(now)
            command = ipmsg.SENDMSG | ipmsg.SENDCHECKOPT
            if target.utf8:
                command |= ipmsg.UTF8OPT
            message.data = self._packet(
                message.number, command, self._encode_text(message.text, target)
            )
        message.tries += 1
        if message.first_sent is None:
            message.first_sent = now
        delay = min(FIRST_RETRY * (1 << min(message.tries - 1, 8)), self._config.max_rto)
        message.retry_at = now + delay
        self._outgoing.append((message.data, addr))

    def _acked(self, addr: Address, number: int, now: float) -> None:
        target = self._targets.get(addr)
        if target is None or not target.queue or target.queue[0].number != number:
            return  # a late copy, or not ours
        message = target.queue.popleft()
        self._pending -= 1
        self._stats.messages_delivered += 1
        self._events.append(
            MessageDelivered(
                message_id=message.message_id, peer=addr, elapsed=now - message.queued_at
            )
        )
        if target.queue:
            self._transmit(addr, target, now)

    def _fail(self, addr: Address, message: _Message, now: float, reason: str) -> None:
        self._pending -= 1
        self._stats.messages_failed += 1
        self._events.append(
            DeliveryFailed(
                message_id=message.message_id,
                peer=addr,
                elapsed=now - message.queued_at,
                reason=reason,
            )
        )

    def _forget(self, addr: Address, now: float, reason: str) -> None:
        target = self._targets.pop(addr)
        for message in target.queue:
            self._fail(addr, message, now, reason)
