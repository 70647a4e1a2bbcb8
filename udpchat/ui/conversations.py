"""Conversations as people name them: `#lobby` for a room, `@bob` for a direct one.

Pure helpers shared by the line mode and the terminal UI: the label of the conversation
an event belongs to, and which peer a name typed after `/msg` or `/query` means.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from ..protocol import (
    Address,
    Event,
    MemberJoined,
    MemberLeft,
    MessageReceived,
    PeerJoined,
    PeerLeft,
    PeerStatus,
)
from .format import Names, escape, format_address


class Conversation(NamedTuple):
    """A room (`room` set) or a direct conversation with one peer (`peer` set). (A
    NamedTuple: a tenth of a frozen dataclass's cost at start-up.)"""

    room: str = ""
    peer: Address | None = None

    def label(self, names: Names | None = None, nick: str = "") -> str:
        """ "#lobby", or "@bob" (the peer's shown name, else its address)."""
        if self.room:
            return f"#{self.room}"
        assert self.peer is not None
        name = names.of(self.peer, nick) if names is not None and nick else nick
        return f"@{escape(name) or format_address(self.peer)}"


def room(name: str) -> Conversation:
    return Conversation(room=name)


def direct(peer: Address) -> Conversation:
    return Conversation(peer=peer)


def find_peer(name: str, rows: Iterable[PeerStatus], names: Names) -> Address | str:
    """The present peer `name` means: its shown name ("bob", "bob (2)"), its nickname
    when only one present peer has it, or its address ("10.0.0.5:9000"). A one-line
    reason why not otherwise."""
    name = name.strip().removeprefix("@")
    present = [row for row in rows if row.present]
    for row in present:
        if format_address(row.peer) == name:
            return row.peer
    shown = [row.peer for row in present if row.nick and names.of(row.peer, row.nick) == name]
    if len(shown) == 1:
        return shown[0]
    by_nick = [row.peer for row in present if row.nick == name]
    if len(by_nick) == 1:
        return by_nick[0]
    if by_nick:
        choices = ", ".join(f"{escape(names.of(p, name))} ({format_address(p)})" for p in by_nick)
        return f"{len(by_nick)} peers are called {escape(name)}: {choices}; name one"
    # A udpchat peer seen in this run that is away: its messages wait for it.
    away = {
        row.instance: row.peer
        for row in rows
        if not row.present and row.instance and row.nick == name and row.dialect == "udpchat"
    }
    if len(away) == 1:
        return next(iter(away.values()))
    return f"nobody called {escape(name)} is here — /peers lists who is"


def split_msg(argument: str) -> tuple[str, str] | None:
    """ "/msg NICK text": (NICK, text), or None when either is missing. A nickname with
    spaces is written in quotes: /msg "bob smith" hi."""
    argument = argument.strip()
    if argument.startswith('"'):
        end = argument.find('"', 1)
        if end < 0:
            return None
        name, text = argument[1:end], argument[end + 1 :]
    else:
        name, _, text = argument.partition(" ")
    text = text.strip()
    return (name, text) if name and text else None


class Strangers:
    """Who shares a room with us, and a limit on direct messages from those who do not.

    A *stranger* is a peer in none of our rooms whom we have not written to directly.
    Anyone may say HELLO and then send direct messages, so a stranger's are shown at
    most `BURST` at once and then one per `REFILL` seconds; the rest are counted and
    reported as "N more ... suppressed", at most once per `REFILL` seconds. The limit is
    per IP address, not per peer: a flood from many ports of one machine is one
    stranger's.
    Peers in one of our rooms, those we have written to, and IP Messenger users (who
    joined the IPMsg network we chose to be on, one per address) are never limited.
    """

    BURST = 5
    REFILL = 10.0
    REMEMBERED = 1024

    def __init__(self) -> None:
        self.rooms_of: dict[Address, set[str]] = {}
        """The rooms each present peer is in, as its events said."""
        self._answered: set[Address] = set()
        self._buckets: dict[str, list[float]] = {}
        """IP address -> [tokens, when last filled, suppressed since the last report, when
        last reported]."""

    def see(self, event: Event) -> None:
        """Follow who is in which room, from the runtime's events."""
        if isinstance(event, PeerJoined):
            self.rooms_of[event.peer] = set(event.rooms)
            if event.dialect == "ipmsg":
                self.answered(event.peer)
        elif isinstance(event, MemberJoined):
            self.rooms_of.setdefault(event.peer, set()).add(event.room)
        elif isinstance(event, MemberLeft):
            self.rooms_of.setdefault(event.peer, set()).discard(event.room)
        elif isinstance(event, PeerLeft):
            self.rooms_of.pop(event.peer, None)

    def screen(
        self, message: MessageReceived, our_rooms: Iterable[str], now: float
    ) -> tuple[bool, int]:
        """For a message received at `now`: (show it?, how many suppressed to report
        now). Only a stranger's direct messages are limited (`admit`)."""
        if message.room or not self.is_stranger(message.peer, our_rooms):
            return True, 0
        return self.admit(message.peer, now)

    def answered(self, peer: Address) -> None:
        """We wrote to `peer` directly: it is no stranger from now on."""
        self._answered.add(peer)
        if len(self._answered) > self.REMEMBERED:
            self._answered.pop()

    def members(self, room: str) -> list[Address]:
        return [peer for peer, rooms in self.rooms_of.items() if room in rooms]

    def is_stranger(self, peer: Address, our_rooms: Iterable[str]) -> bool:
        if peer in self._answered:
            return False
        return not self.rooms_of.get(peer, set()) & set(our_rooms)

    def admit(self, peer: Address, now: float) -> tuple[bool, int]:
        """For a stranger's direct message at `now`: (show it?, how many suppressed
        from its IP address since the last report, to report now; 0: nothing to
        report)."""
        host = peer[0]
        bucket = self._buckets.get(host)
        if bucket is None:
            if len(self._buckets) >= self.REMEMBERED:
                del self._buckets[next(iter(self._buckets))]
            bucket = self._buckets[host] = [float(self.BURST), now, 0.0, float("-inf")]
        tokens = min(float(self.BURST), bucket[0] + (now - bucket[1]) / self.REFILL)
        bucket[1] = now
        if tokens >= 1:
            bucket[0] = tokens - 1
            return True, 0
        bucket[0] = tokens
        bucket[2] += 1
        if now - bucket[3] < self.REFILL:
            return False, 0
        suppressed, bucket[2], bucket[3] = int(bucket[2]), 0.0, now
        return False, suppressed


def suppressed_text(peer: Address, name: str, count: int) -> str:
    """The line that reports a stranger's direct messages not shown."""
    many = "a direct message" if count == 1 else f"{count} direct messages"
    who = f"{escape(name)} ({format_address(peer)})" if name else format_address(peer)
    return (
        f"* {many} from {who} not shown: not in any of your rooms, and more than"
        f" {Strangers.BURST} at once (write to them to see all)"
    )
