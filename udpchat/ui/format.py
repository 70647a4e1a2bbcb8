"""Turning events into text for people and scripts, safely.

Text from a peer can contain anything. `escape` makes it inert before it reaches a
terminal: C0 controls (but tab, and newline where allowed), DEL, C1 controls and the
bidirectional overrides and isolates are replaced by visible escapes such as `\\x1b` or
`\\u202e`. Both the line mode and the terminal UI print only escaped peer text.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from ..protocol import (
    Address,
    DatagramRejected,
    DeliveryFailed,
    Event,
    MessageDelivered,
    MessageReceived,
    PeerJoined,
    PeerLeft,
    PeerRenamed,
    SendFailed,
)

_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE_MULTILINE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")
_UNSAFE_ONE_LINE = re.compile(f"[\x00-\x08\x0a-\x1f\x7f-\x9f{_BIDI}]")
# json.dumps escapes C0 itself; C1 and bidi controls are escaped too, so that a JSONL
# stream shown in a terminal is as inert as the line mode.
_UNSAFE_JSON = re.compile(f"[\x7f-\x9f{_BIDI}]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with every character that could steer a terminal shown as an escape."""
    pattern = _UNSAFE_MULTILINE if keep_newlines else _UNSAFE_ONE_LINE
    return pattern.sub(_visible, text)


def format_address(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def who(peer: Address, nick: str) -> str:
    return f"{escape(nick)} ({format_address(peer)})" if nick else format_address(peer)


def clock(wall: float | None = None, *, seconds: bool = True) -> str:
    return time.strftime("%H:%M:%S" if seconds else "%H:%M", time.localtime(wall))


def duration(seconds: float) -> str:
    """A round trip or delay for people: "0.4 ms", "12 ms", "1.5 s"."""
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.1f} s"


def ago(seconds: float | None) -> str:
    """How long ago we last heard from a peer: "3 s ago", "2 min ago", or "never"."""
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    return f"{seconds / 60:.0f} min ago"


def describe(event: Event, texts: dict[int, str] | None = None) -> str | None:
    """The line-mode text of an event (without the time), or None for a silent one."""
    if isinstance(event, MessageReceived):
        return f"{escape(event.nick) or '?'}: {escape(event.text)}"
    if isinstance(event, PeerJoined):
        verb = "restarted" if event.restarted else "joined"
        return f"* {who(event.peer, event.nick)} {verb}"
    if isinstance(event, PeerLeft):
        how = "left" if event.reason == "bye" else f"left ({event.reason})"
        return f"* {who(event.peer, event.nick)} {how}"
    if isinstance(event, PeerRenamed):
        return (
            f"* {escape(event.old_nick)} ({format_address(event.peer)})"
            f" is now {escape(event.new_nick)}"
        )
    if isinstance(event, DeliveryFailed):
        text = (texts or {}).get(event.message_id)
        quoted = f' "{escape(_shorten(text))}"' if text is not None else ""
        to = f" to {format_address(event.peer)}" if event.peer is not None else ""
        return (
            f"* message {event.message_id}{quoted}{to}"
            f" failed after {event.elapsed:.1f} s: {event.reason}"
        )
    if isinstance(event, DatagramRejected):
        hint = AUTH_HINTS.get(event.reason)
        if hint is not None:
            many = f"{event.count} datagrams" if event.count > 1 else "a datagram"
            source = format_address(event.peer)
            return f"* {many} from {source} failed authentication ({event.reason}): {hint}"
        more = f" ({event.count} dropped)" if event.count > 1 else ""
        preview = f': "{escape(_shorten(event.preview))}"' if event.preview else ""
        return (
            f"* dropped a datagram from {format_address(event.peer)}{more}: {event.reason}{preview}"
        )
    if isinstance(event, SendFailed):
        many = f" ({event.count} datagrams)" if event.count > 1 else ""
        return f"* could not send to {format_address(event.peer)}{many}: {event.reason}"
    return None  # MessageDelivered: silent in line mode


AUTH_HINTS = {
    "authentication failed": "different key?",
    "replayed": "a copy of an earlier datagram, dropped",
    "timestamp outside the allowed clock skew": "replayed, or the clocks differ by over 60 s",
    "not encrypted": "the peer has no shared key",
    "encrypted, and this chat has no key": "the peer uses a shared key (--key-file, --ask-key)",
}
"""What to tell the user about each shared-key failure the core reports."""


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_NAMES = {
    MessageReceived: "message_received",
    MessageDelivered: "message_delivered",
    DeliveryFailed: "delivery_failed",
    PeerJoined: "peer_joined",
    PeerLeft: "peer_left",
    PeerRenamed: "peer_renamed",
    DatagramRejected: "datagram_rejected",
    SendFailed: "send_failed",
}


def to_json(event: Event, wall: float | None = None) -> str:
    """One JSON object (one line) for `--jsonl`: the event's fields plus its name and time."""
    record: dict[str, Any] = {"event": _NAMES[type(event)], "time": _iso(wall)}
    for name in event.__slots__:
        value = getattr(event, name)
        record[name] = format_address(value) if name == "peer" and value else value
    return _dumps(record)


def json_line(name: str, wall: float | None = None, **fields: Any) -> str:
    """A JSON line for something that is not a core event (ready, sent, error)."""
    return _dumps({"event": name, "time": _iso(wall), **fields})


def _dumps(record: dict[str, Any]) -> str:
    text = json.dumps(record, ensure_ascii=False)
    return _UNSAFE_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _iso(wall: float | None) -> str:
    now = time.time() if wall is None else wall
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
    return f"{stamp}.{int(now % 1 * 1000):03d}{time.strftime('%z', time.localtime(now))}"
