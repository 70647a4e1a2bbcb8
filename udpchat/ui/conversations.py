"""Conversations as people name them: `#lobby` for a room, `@bob` for a direct one.

Pure helpers shared by the line mode and the terminal UI: the label of the conversation
an event belongs to, and which peer a name typed after `/msg` or `/query` means.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..protocol import Address, PeerStatus
from .format import Names, escape, format_address


@dataclass(frozen=True, slots=True)
class Conversation:
    """A room (`room` set) or a direct conversation with one peer (`peer` set)."""

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
