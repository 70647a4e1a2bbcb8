"""Tunable limits of the core and the counters it keeps.

Every per-peer table is bounded by a field here; docs/protocol.md ("Limits") lists the
defaults and what happens at each limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Protocol

from .plain import ENCODINGS
from .rooms import DEFAULT_ROOM, MAX_ROOMS, is_room
from .wire import ANNOUNCE_PERIOD


class MessageTransform(Protocol):
    """Per-message work on the text, run by the core where each model runs its halves:
    `outgoing` when the send half queues a message, `incoming` when the receive half has
    reassembled one. It must pickle (the process model ships it to its children)."""

    def outgoing(self, text: str) -> str: ...

    def incoming(self, text: str) -> str: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    give_up_after: float = 30.0
    """Seconds after `send_message` at which an unacknowledged message fails."""
    initial_rto: float = 0.25
    """Retransmission timeout before any round trip has been measured (RFC 6298 2.1)."""
    min_rto: float = 0.05
    """Floor of the computed timeout; loopback and LAN round trips are far below it."""
    max_rto: float = 2.0
    """Cap of the timeout after exponential back-off. LAN round trips are milliseconds,
    so 2 s still backs off 40-fold from the floor, and a datagram at the end of a burst,
    which only its timer resends, gets about twice the tries before the give-up that a
    cap of 8 s gave it (docs/protocol.md, "Sending")."""
    keepalive_interval: float = 15.0
    """Seconds between PINGs to a peer that is present."""
    peer_timeout: float = 45.0
    """A peer silent for this long is reported as left ("timed out")."""
    suspect_after: float = 13.0
    """A peer silent for this long while our DATA to it goes unacknowledged (we are
    retransmitting, at least every `max_rto`) is reported as left ("timed out") at the
    next retransmission: within 15 s when we are talking to it."""
    hello_retry_max: float = 30.0
    """Cap of the back-off between HELLOs to a configured peer that has not answered."""
    send_window: int = 64
    """DATA datagrams in flight per peer: seq < base + 64, so that the ACK's 64-bit
    selective map reaches every datagram in flight."""
    receive_window: int = 128
    """Out-of-order DATA datagrams held back per peer; the sender's window fits inside."""
    max_peers: int = 256
    """Peers remembered at once; the least recently heard absent one is forgotten first."""
    max_peers_per_host: int = 8
    """Present peers at one IP address: several chats on one machine are common, a
    hundred are one program making up peers from as many ports. Loopback addresses are
    exempt: this machine's own chats number as many as its user starts."""
    max_pending: int = 10_000
    """Messages accepted by `send_message` and not yet delivered or failed, all peers."""
    keep: float = 7 * 86400.0
    """How long a direct message to a udpchat peer that is away is held for it (the
    offline outbox), from when it was written; 0 holds none: it fails as a message to
    any peer that does not answer."""
    max_held: int = 1000
    """Direct messages held for peers that are away, all peers together."""
    max_held_bytes: int = 16 * 1024 * 1024
    """Their text, in bytes of UTF-8, all peers together."""
    keys_remembered: int = 4096
    """Keys of the messages shown last, so that a copy sent again by a restarted sender,
    or from its outbox, is acknowledged and not shown twice (the history remembers the
    rest)."""
    retired_sessions: int = 4
    """Old session ids remembered per peer, so late datagrams of a dead session are dropped."""
    reject_report_interval: float = 5.0
    """At most one DatagramRejected event per this many seconds; the rest are counted."""
    key: bytes | None = field(default=None, repr=False)
    """Shared-key mode: the 32-byte master key (`crypto.derive_master_key`), or None."""
    max_skew: float = 60.0
    """Shared-key mode: sealed datagrams stamped further than this from our clock are
    refused (bounds replays to a receiver that restarted and forgot its windows)."""
    unknown_rate: float = 100.0
    """Datagrams per second accepted from an address that is not a present peer."""
    unknown_burst: float = 200.0
    """Burst allowed above `unknown_rate` from such an address."""
    max_sources: int = 1024
    """Addresses whose rate is tracked; the least recently seen is forgotten first."""
    announce_to: tuple[tuple[str, int], ...] = ()
    """Discovery: where ANNOUNCE datagrams go (the group and broadcast addresses the
    runtime chose, docs/protocol.md, "Discovery"); empty turns announcing off."""
    announce_period: float = ANNOUNCE_PERIOD
    """Discovery: the steady interval between announcements, after the start-up ones. A
    peer that announces itself is kept present by its announcements rather than by
    keepalive PINGs, and is gone after three periods of silence."""
    rooms: tuple[str, ...] = (DEFAULT_ROOM,)
    """The rooms a chat is in when it starts (`--room`); the first is where a message
    goes when no room is named."""
    room_keys: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)
    """Keyed rooms among `rooms` from the start: (room, the master key of its
    passphrase), so that the first HELLO already lists them by tag."""
    instance: bytes = field(default=bytes(8), repr=False)
    """This installation's 8-byte instance id, carried in ANNOUNCE."""
    raw_encoding: str | None = None
    """Plain text peers: the encoding to read and write them in (`--encoding`); None
    guesses per peer (UTF-8, else GB18030). docs/protocol.md, "Plain text peers"."""
    raw_line_end: str = "\n"
    """What ends each line sent to a plain text peer."""
    ipmsg: bool = False
    """Speak IP Messenger too (`--ipmsg`): IPMsg packets are its users' presence and
    messages (docs/protocol.md, "IP Messenger peers"); the chat must then be on UDP port
    2425, where IPMsg clients send. False: they are dropped as foreign."""
    ipmsg_broadcast: tuple[tuple[str, int], ...] = ()
    """Where our IPMsg entry packets (BR_ENTRY, BR_EXIT, BR_ABSENCE) are broadcast: the
    LAN's broadcast addresses, port 2425 (the runtime finds them)."""
    ipmsg_user: str = "udpchat"
    """The login name IPMsg packets carry (the runtime gives the real one)."""
    ipmsg_host: str = "udpchat"
    """The host name IPMsg packets carry (the runtime gives the real one)."""
    ipmsg_group: str = ""
    """The group IPMsg users see us in."""
    transform: MessageTransform | None = None
    """Work applied to every message's text on the send and the receive path (the
    benchmark's CPU-bound scenario), or None."""

    def __post_init__(self) -> None:
        if self.receive_window < self.send_window:
            raise ValueError("receive_window must be at least send_window")
        if not 1 <= self.send_window <= 64:
            raise ValueError("send_window must be 1 to 64 (the selective ACK's reach)")
        if not 0 < self.min_rto <= self.initial_rto <= self.max_rto:
            raise ValueError("need 0 < min_rto <= initial_rto <= max_rto")
        if self.key is not None and len(self.key) != 32:
            raise ValueError("key must be the 32-byte master key")
        if len(self.instance) != 8:
            raise ValueError("instance must be 8 bytes")
        if self.announce_period < 4:
            raise ValueError("announce_period must be at least 4 s")
        if len(self.rooms) > MAX_ROOMS or not all(is_room(room) for room in self.rooms):
            raise ValueError(f"rooms must be at most {MAX_ROOMS} valid room names")
        if len(set(self.rooms)) != len(self.rooms):
            raise ValueError("rooms must not repeat")
        for room, room_key in self.room_keys:
            if room not in self.rooms or len(room_key) != 32:
                raise ValueError("room_keys: a room among rooms, and a 32-byte master key")
        if self.raw_encoding is not None and self.raw_encoding not in ENCODINGS:
            raise ValueError(f"raw_encoding must be one of {', '.join(ENCODINGS)}")
        if self.ipmsg and self.key is not None:
            raise ValueError("a shared key and IP Messenger do not mix: IPMsg is not authenticated")
        if self.max_peers_per_host < 1:
            raise ValueError("max_peers_per_host must be positive")
        if self.keep < 0 or self.max_held < 0 or self.max_held_bytes < 0:
            raise ValueError("keep, max_held and max_held_bytes must not be negative")
        if self.keys_remembered < 1:
            raise ValueError("keys_remembered must be positive")
        if self.give_up_after <= 0 or self.max_peers < 1 or self.max_pending < 1:
            raise ValueError("give_up_after, max_peers and max_pending must be positive")


@dataclass(slots=True)
class Stats:
    """Counters since the session opened. Each half of the core keeps its own; add them."""

    datagrams_sent: int = 0
    datagrams_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    """Messages accepted by `send_message` (one per message, whatever the peer count)."""
    messages_delivered: int = 0
    """Deliveries acknowledged, one per (message, peer)."""
    messages_failed: int = 0
    """Deliveries given up, one per (message, peer)."""
    messages_received: int = 0
    data_sent: int = 0
    """DATA datagrams sent for the first time."""
    retransmissions: int = 0
    acks_sent: int = 0
    acks_received: int = 0
    duplicates_dropped: int = 0
    """DATA datagrams received again (acknowledged again, shown once)."""
    messages_repeated: int = 0
    """Whole messages received again under a key already shown (a restarted sender's
    copy, or one from its outbox): acknowledged, not shown."""
    malformed_dropped: int = 0
    """Datagrams with the udpchat magic that did not decode, or broke the fragment rules."""
    foreign_dropped: int = 0
    """Datagrams that are not udpchat at all."""
    window_dropped: int = 0
    """DATA beyond the receive window, or from a peer when the peer table was full."""
    stale_dropped: int = 0
    """Datagrams of a peer's retired session, or acknowledgements of another session."""
    auth_failed: int = 0
    """Shared-key mode mismatches: forged, replayed, too old, or sealed with another key
    (or sealed when we have none, or plain when we have one)."""
    rate_limited: int = 0
    """Datagrams from an unknown address beyond `unknown_rate`, dropped unread."""
    announcements_sent: int = 0
    """Discovery announcements (one per period, whatever the number of addresses)."""
    announcements_received: int = 0
    """ANNOUNCE datagrams from others that passed the checks."""
    raw_received: int = 0
    """Datagrams from plain text peers, shown as their messages."""
    ipmsg_received: int = 0
    """IP Messenger packets taken (entries, messages, answers)."""
    discovery_dropped: int = 0
    """Datagrams on the discovery port that were not an ANNOUNCE we could read (another
    key or none, another program): dropped without a report or an answer."""

    def __add__(self, other: Stats) -> Stats:
        return Stats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))
