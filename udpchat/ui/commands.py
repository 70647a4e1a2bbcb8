"""The terminal UI's slash commands: parsing, completion and the text they show.

Everything here is pure: it reads the input line or the runtime's answers (`Stats`,
`PeerStatus`) and returns text, already escaped, for the conversation pane. Running a
command (calling the runtime, changing the screen) is the UI's job (`tui.py`).

A line starting with "/" is a command; "//" sends the rest as a message starting with "/".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from ..protocol import MAX_NICK_BYTES, PeerStatus, Stats
from .format import ago, duration, escape, format_address
from .pane import text_width

COMMANDS: dict[str, tuple[str, str]] = {
    "help": ("/help", "this list"),
    "peers": ("/peers", "who is there: address, nickname, rooms, last seen, round trip, pending"),
    "nick": ("/nick NAME", "change your nickname and tell your peers"),
    "peer": ("/peer add|del HOST[:PORT]", "start or stop chatting with someone"),
    "stats": ("/stats", "messages sent, delivered, retransmitted, dropped; round trips"),
    "model": ("/model", "the concurrency model running this chat"),
    "resend": ("/resend N", "send failed message N again"),
    "join": ("/join NAME", "join a room (or go back to it); lines you type go there"),
    "leave": ("/leave [NAME]", "leave a room (this one by default)"),
    "rooms": ("/rooms", "the rooms seen on the LAN, with their members"),
    "msg": ("/msg NICK text", "a direct message: to one peer only"),
    "query": ("/query NICK", "talk to one peer only: lines you type go to them"),
    "switch": ("/switch #ROOM|NICK", "go to a room you are in, or to a direct conversation"),
    "raw": ("/raw HOST[:PORT]", "talk to a plain UDP tool (nc, socat, a network assistant)"),
    "encoding": (
        "/encoding [PEER] ENC",
        "read and write a plain peer as utf-8, gbk, gb18030, cp932 or hex",
    ),
    "search": ("/search TEXT", "find messages in the history, in every conversation"),
    "queue": ("/queue", "direct messages waiting for peers that are away"),
    "cancel": ("/cancel N", "take back message N of /queue before it goes"),
    "quit": ("/quit, /q, /exit", "wait for deliveries, say goodbye, leave (or Ctrl-D, Ctrl-C)"),
}
"""Command name -> (usage, what it does), in the order /help lists them."""

ALIASES = {"q": "quit", "exit": "quit"}
"""Other names of commands; `parse_input` gives the command's own name."""

KEYS = (
    ("Enter", "send; a pasted block of lines is one message"),
    ("Alt-Enter", "new line inside the message"),
    ("Up, Down", "input history"),
    ("Tab", "complete a command"),
    ("PageUp, PageDown", "scroll the conversation"),
    ("//text", "send a message that starts with /"),
)

MODEL_DESCRIPTIONS = {
    "thread": "a receiving thread and a sending thread around one socket",
    "process": "a receiving process and a sending process around one socket",
    "asyncio": "one asyncio event loop in a background thread",
}


@dataclass(frozen=True, slots=True)
class Command:
    """A slash command as typed: `name` without the slash, `argument` the rest, stripped."""

    name: str
    argument: str


def parse_input(line: str) -> Command | str:
    """The command on `line`, or the text to send ("//x" sends "/x")."""
    if line.startswith("//"):
        return line[1:]
    if line.startswith("/"):
        name, _, argument = line[1:].partition(" ")
        name = name.strip()
        return Command(ALIASES.get(name, name), argument.strip())
    return line


def unknown_command(name: str) -> str:
    return f"unknown command /{escape(name)} — try /help (// sends a line starting with /)"


def nick_problem(name: str) -> str | None:
    """Why `name` cannot be a nickname, or None when it can (the rules of `--name`)."""
    if not name:
        return "usage: /nick NAME"
    if escape(name) != name:
        return "a nickname cannot hold control characters"
    if len(name.encode("utf-8")) > MAX_NICK_BYTES:
        return f"a nickname is at most {MAX_NICK_BYTES} bytes of UTF-8"
    return None


def help_lines() -> list[str]:
    width = max(text_width(usage) for usage, _ in COMMANDS.values())
    lines = ["commands:"]
    lines += [f"  {_pad(usage, width)}  {text}" for usage, text in COMMANDS.values()]
    width = max(text_width(key) for key, _ in KEYS)
    lines.append("keys:")
    lines += [f"  {_pad(key, width)}  {text}" for key, text in KEYS]
    return lines


def _who(row: PeerStatus) -> str:
    if row.dialect == "raw":
        return f"(raw, {row.encoding})"
    if row.dialect == "ipmsg":
        return f"{escape(row.nick)} (IPMsg, {row.encoding})"
    return escape(row.nick) or "-"


def _where(row: PeerStatus) -> str:
    """Its rooms, or an IP Messenger user's group and host."""
    if row.dialect == "ipmsg":
        about = [f"group {escape(row.group)}"] if row.group else []
        about += [f"host {escape(row.host)}"] if row.host else []
        return ", ".join(about) or "-"
    return " ".join(f"#{room}" for room in row.rooms) or "-"


def peers_lines(rows: list[PeerStatus]) -> list[str]:
    """/peers: one line per peer, columns aligned whatever the width of the nicknames."""
    if not rows:
        return ["no peers yet — /peer add HOST[:PORT]"]
    table = [
        [
            format_address(row.peer),
            _who(row),
            _where(row),
            ("here" if row.present else "away") + (", configured" if row.configured else ""),
            f"seen {ago(row.silent_for)}",
            f"rtt {duration(row.rtt)}" if row.rtt is not None else "rtt -",
            f"{row.pending} pending",
        ]
        for row in rows
    ]
    widths = [max(text_width(line[column]) for line in table) for column in range(7)]
    lines = [f"{len(rows)} peer{'s' if len(rows) != 1 else ''}:"]
    for line in table:
        cells = [_pad(cell, width) for cell, width in zip(line, widths, strict=True)]
        lines.append(("  " + "  ".join(cells)).rstrip())
    return lines


def stats_lines(stats: Stats, rows: list[PeerStatus]) -> list[str]:
    """/stats: the counters people ask about, then the round trip to each peer."""
    lines = [
        f"messages: {stats.messages_sent} sent · {stats.messages_delivered} delivered"
        f" · {stats.messages_failed} failed · {stats.messages_received} received",
        f"datagrams: {stats.datagrams_sent} sent · {stats.datagrams_received} received"
        f" · {stats.retransmissions} retransmitted",
        f"dropped: {stats.duplicates_dropped} duplicates · {stats.malformed_dropped} malformed"
        f" · {stats.foreign_dropped} foreign (not udpchat)",
    ]
    trips = [
        f"{escape(row.nick) or format_address(row.peer)} {duration(row.rtt)}"
        for row in rows
        if row.rtt is not None
    ]
    lines.append("round trip: " + (" · ".join(trips) if trips else "not measured yet"))
    return lines


class CommandCompleter(Completer):
    """Tab completion: command names, "/peer add|del", known peers, failed message ids."""

    def __init__(
        self, peers: Callable[[], Iterable[str]], failed: Callable[[], Iterable[int]]
    ) -> None:
        self._peers = peers
        self._failed = failed

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        text = document.text_before_cursor
        if not text.startswith("/") or text.startswith("//") or "\n" in text:
            return
        words = text.split(" ")
        if len(words) == 1:
            names = [(name, description) for name, (_, description) in COMMANDS.items()]
            names += [(alias, f"the same as /{name}") for alias, name in ALIASES.items()]
            for name, description in names:
                if name.startswith(text[1:]):
                    yield Completion(
                        f"/{name}", start_position=-len(text), display_meta=description
                    )
            return
        command, current = words[0], words[-1]
        if command == "/peer" and len(words) == 2:
            choices: Iterable[str] = ("add", "del")
        elif command == "/peer" and len(words) == 3 and words[1] == "del":
            choices = self._peers()
        elif command == "/resend" and len(words) == 2:
            choices = [str(message_id) for message_id in self._failed()]
        else:
            return
        for choice in choices:
            if choice.startswith(current):
                yield Completion(choice, start_position=-len(current))


def _pad(text: str, width: int) -> str:
    return text + " " * (width - text_width(text))
