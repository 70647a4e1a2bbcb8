"""`ChatSession`: the whole sans-I/O core for one local endpoint.

It joins the receive half and the send half, passing the receive half's notes straight
to the send half. The thread and asyncio models drive one `ChatSession`; the process
model drives the two halves in two processes and carries the notes over a pipe.

Three inputs drive it (calls, `receive_datagram`, `handle_timer`) and the caller drains
it after each: `datagrams_to_send(now)`, `get_timer()`, `next_event()`. It never reads a
clock or touches a socket; `now` is any monotonic time in seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .config import Config, Stats
from .events import Address, Event
from .receiver import PeerInfo, Receiver
from .sender import Outboxed, Sender, TargetInfo


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """One peer as `/peers` shows it."""

    peer: Address
    nick: str
    present: bool
    configured: bool
    silent_for: float | None
    """Seconds since we last heard from it, or None if never."""
    rtt: float | None
    """Smoothed round-trip time in seconds, or None before the first sample."""
    pending: int
    """Messages to it not yet acknowledged or failed."""
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
    """A udpchat peer's installation (instance id), when known: what a direct message
    to it is held for while it is away."""


def merge_peers(
    targets_known: list[TargetInfo], heard_from: list[PeerInfo], now: float
) -> list[PeerStatus]:
    """Join what each half knows of the peers (`Sender.targets()`, `Receiver.peers()`),
    one row per address."""
    heard = {info.peer: info for info in heard_from}
    rows = []
    targets = {t.peer: t for t in targets_known}
    for addr in list(targets) + [a for a in heard if a not in targets]:
        target, info = targets.get(addr), heard.get(addr)
        rows.append(
            PeerStatus(
                peer=addr,
                nick=info.nick if info else "",
                present=info.present if info else False,
                configured=target.configured if target else False,
                silent_for=now - info.last_heard if info else None,
                rtt=target.srtt if target else None,
                pending=target.pending if target else 0,
                rooms=info.rooms if info else (),
                dialect=info.dialect if info else "udpchat",
                encoding=info.encoding if info else "",
                group=info.group if info else "",
                host=info.host if info else "",
                instance=info.instance if info else b"",
            )
        )
    return rows


class ChatSession:
    """One chat endpoint: any number of peers, one session id per start."""

    def __init__(
        self,
        nick: str,
        *,
        session_id: bytes | None = None,
        config: Config | None = None,
        wall_offset: float = 0.0,
    ) -> None:
        """`wall_offset` is wall-clock time minus the caller's `now`; shared-key mode uses
        it to stamp datagrams. Runtimes pass `time.time() - time.monotonic()`."""
        self.config = config or Config()
        # os.urandom rather than secrets: the same bytes, without importing random and
        # hashlib (and OpenSSL with it) at every start (docs/models.md, "Figures behind
        # the design").
        self.session_id = session_id if session_id is not None else os.urandom(8)
        self.receiver = Receiver(self.session_id, self.config, wall_offset=wall_offset)
        self.sender = Sender(self.session_id, nick, self.config, wall_offset=wall_offset)

    @property
    def nick(self) -> str:
        return self.sender.nick

    # -- inputs ---------------------------------------------------------------

    def add_peer(self, addr: Address, now: float) -> None:
        self.sender.add_peer(addr, now)

    def remove_peer(self, addr: Address, now: float) -> None:
        self.sender.remove_peer(addr, now)

    def set_nick(self, nick: str) -> None:
        self.sender.set_nick(nick)

    def join(self, room: str, now: float, *, key: bytes | None = None) -> str:
        """Join `room` (keyed with `key`) and tell the peers; see `Sender.join`."""
        room = self.sender.join(room, now, key=key)
        self.receiver.set_room_key(room, key)
        self._pass_notes(now)
        return room

    def leave(self, room: str, now: float) -> str:
        """Leave `room` and tell the peers; see `Sender.leave`."""
        room = self.sender.leave(room, now)
        self.receiver.set_room_key(room, None)
        self._pass_notes(now)
        return room

    def add_raw_peer(self, addr: Address, now: float, encoding: str | None = None) -> None:
        """Chat with `addr` as a plain text peer (docs/protocol.md, "Plain text peers"),
        in `encoding` from now on, or as guessed from what it sends; see
        `Receiver.add_raw_peer`."""
        self.receiver.add_raw_peer(addr, now, encoding)
        self._pass_notes(now)

    @property
    def rooms(self) -> tuple[str, ...]:
        """The rooms we are in, the default one first."""
        return tuple(self.sender.rooms)

    def start_announcing(self, addresses: tuple[Address, ...]) -> None:
        """Announce this chat to `addresses` (docs/protocol.md, "Discovery"); see
        `Sender.start_announcing`. `Config.announce_to` does the same from the start."""
        self.sender.start_announcing(addresses)

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
        """Queue a message for a room's members, or for the peers in `to`; see
        `Sender.send_message`."""
        return self.sender.send_message(
            text,
            now,
            sent_at_ms=sent_at_ms,
            to=to,
            room=room,
            message_id=message_id,
            key=key,
            outboxed=outboxed,
        )

    def cancel(self, message_id: int, now: float) -> bool:
        """Take a held message out of the outbox; see `Sender.cancel`."""
        return self.sender.cancel(message_id, now)

    def receive_datagram(
        self, data: bytes, addr: Address, now: float, *, announced: bool = False
    ) -> None:
        """Take one datagram from the network (`announced`: from the discovery port).
        Never raises on its content."""
        self.receiver.receive_datagram(data, addr, now, announced=announced)
        self._pass_notes(now)

    def handle_timer(self, now: float) -> None:
        self.receiver.handle_timer(now)
        self._pass_notes(now)
        self.sender.handle_timer(now)
        unanswered = self.sender.take_unanswered()
        if unanswered:
            self.receiver.suspect(unanswered, now)
            self._pass_notes(now)

    def close(self) -> None:
        """Queue a BYE to every peer; drain `datagrams_to_send` once more after this."""
        self.sender.take_farewell(self.receiver.farewell())
        self.sender.close()

    # -- outputs --------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Acks and PONGs first (they unblock the peer), then our own DATA and probes."""
        return self.receiver.datagrams_to_send(now) + self.sender.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        timers = [t for t in (self.receiver.get_timer(), self.sender.get_timer()) if t is not None]
        return min(timers) if timers else None

    def next_event(self) -> Event | None:
        event = self.receiver.next_event()
        return event if event is not None else self.sender.next_event()

    def pending(self) -> int:
        return self.sender.pending()

    def active_peers(self) -> int:
        """How many peers a new message would go to."""
        return self.sender.active_peers()

    def stats(self) -> Stats:
        return self.receiver.stats + self.sender.stats

    def peers(self, now: float) -> list[PeerStatus]:
        return merge_peers(self.sender.targets(), self.receiver.peers(), now)

    def _pass_notes(self, now: float) -> None:
        note = self.receiver.next_note()
        while note is not None:
            self.sender.handle_note(note, now)
            note = self.receiver.next_note()
