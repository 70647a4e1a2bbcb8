"""Turning events into text for people and scripts, safely.

Text from a peer can contain anything. `escape` makes it inert before it reaches a
terminal: C0 controls (but tab, and newline where allowed), DEL, C1 controls, the line and
paragraph separators and the bidirectional overrides and isolates are replaced by visible
escapes such as `\\x1b` or `\\u202e`, and a base character keeps at most `MAX_MARKS`
combining marks (a line of thousands, stacked on one letter, would cover the screen).
Both the line mode and the terminal UI print only escaped peer text; `--jsonl` escapes
the same characters as JSON escapes, so that a script still reads the text exactly.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

from ..protocol import (
    Address,
    DatagramRejected,
    DatagramsRefused,
    DeliveryFailed,
    Event,
    FileOffered,
    HistoryFailed,
    LeaveReason,
    MemberJoined,
    MemberLeft,
    MessageDelivered,
    MessageHeld,
    MessageReceived,
    PeerJoined,
    PeerLeft,
    PeerRenamed,
    RawMessageSent,
    RejectReason,
    SendFailed,
    VersionMismatched,
)
from ..protocol.wire import VERSION
from ..runtimes.sockets import lan_addresses

if TYPE_CHECKING:
    from ..store import StoredMessage

# Bidirectional controls, and the line and paragraph separators, which some terminals
# and most editors take for a line end.
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029"
_UNSAFE_MULTILINE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")
_UNSAFE_ONE_LINE = re.compile(f"[\x00-\x08\x0a-\x1f\x7f-\x9f{_BIDI}]")
# json.dumps escapes C0 itself; C1 and bidi controls are escaped too, so that a JSONL
# stream shown in a terminal is as inert as the line mode.
_UNSAFE_JSON = re.compile(f"[\x7f-\x9f{_BIDI}]")

MAX_MARKS = 4
"""Combining marks kept on one base character; real scripts stack at most three or so."""
_MAYBE_MARKS = re.compile(f"[\u0300-\U000e01ef]{{{MAX_MARKS + 1},}}")
"""Runs long enough to hold too many marks (every combining mark is at U+0300 or above):
only these are looked at character by character."""


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _cap_marks(text: str, show_rest: Callable[[str], str]) -> str:
    """`text` with each run of combining marks cut to MAX_MARKS, the rest of the run
    replaced by `show_rest(rest)`."""
    if _MAYBE_MARKS.search(text) is None:
        return text
    pieces: list[str] = []
    kept_from = index = 0
    while index < len(text):
        if unicodedata.category(text[index])[0] != "M":
            index += 1
            continue
        end = index + 1
        while end < len(text) and unicodedata.category(text[end])[0] == "M":
            end += 1
        if end - index > MAX_MARKS:
            pieces += [
                text[kept_from : index + MAX_MARKS],
                show_rest(text[index + MAX_MARKS : end]),
            ]
            kept_from = end
        index = end
    pieces.append(text[kept_from:])
    return "".join(pieces)


def _count_marks(rest: str) -> str:
    return f"[+{len(rest)} combining marks]"


def escape(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with every character that could steer a terminal shown as an escape, and
    at most MAX_MARKS combining marks on a character (the count of the others shown)."""
    pattern = _UNSAFE_MULTILINE if keep_newlines else _UNSAFE_ONE_LINE
    return _cap_marks(pattern.sub(_visible, text), _count_marks)


def format_address(addr: Address) -> str:
    """An address for people: "192.168.1.20:9000", "[fd00::2]:9000".

    An IPv4-mapped address (how a dual-stack socket sees an IPv4 peer) is shown as the
    IPv4 address it stands for.
    """
    host, port = addr
    if host[:7].lower() == "::ffff:":
        try:
            mapped = ipaddress.IPv6Address(host).ipv4_mapped
        except ValueError:
            mapped = None
        if mapped is not None:
            return f"{mapped}:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ready_text(local: Address, nick: str, model: str, shared_key: str | None = None) -> str:
    """The start of the line that says the chat is ready: where, who, how.

    `shared_key` says where the shared key came from ("--key-file"), None without one.
    """
    how = f"{model} model" + (f", shared key from {shared_key}" if shared_key else "")
    return f"listening on {format_address(local)} as {escape(nick)} ({how})"


IPMSG_TEXT = (
    "IP Messenger users (IPMsg, FeiQ, iptux) on the LAN see you and can write to you"
    " (UDP port 2425); /msg NICK answers them"
)
"""The ready line of a chat with `--ipmsg`."""


def discovery_text(port: int | None, local: Address | None = None) -> str:
    """The line that says whether this chat looks for others, on the LAN or (bound to a
    loopback address, `local`) on this machine."""
    if port is None:
        return "discovery off: chatting with peers named by --peer or /peer add"
    where = "the LAN"
    if local is not None:
        try:
            if ipaddress.ip_address(local[0].split("%")[0]).is_loopback:
                where = "this machine"
        except ValueError:
            pass
    return f"finding others on {where} (announcements on UDP port {port})"


REACH_LISTED = 4
"""Addresses named in the reach line; more are counted."""


def reachable_at(local: Address, lan: Sequence[str] | None = None) -> list[str] | None:
    """The addresses (with the port) others can reach a socket bound to `local` at: the
    bound address when it is specific, else this machine's LAN addresses of its family
    (`lan`, read from the interfaces when not given). None where they cannot be told."""
    host, port = local
    try:
        bound = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    if not bound.is_unspecified:
        return [] if bound.is_loopback else [format_address(local)]
    if lan is None:
        lan = lan_addresses()
        if lan is None:
            return None
    # A "::" socket is dual-stack (runtimes.sockets): it has IPv4 and IPv6 addresses.
    usable = [addr for addr in lan if bound.version == 6 or ":" not in addr]
    return [format_address((addr, port)) for addr in usable]


def reach_text(local: Address, lan: Sequence[str] | None = None) -> str | None:
    """The line that tells the user which address to give to the others, or None."""
    if lan is None and ipaddress.ip_address(local[0].split("%")[0]).is_unspecified:
        lan = lan_addresses()
    addresses = reachable_at(local, lan)
    if addresses is None:
        return None
    if not addresses:
        if not ipaddress.ip_address(local[0].split("%")[0]).is_unspecified:
            return f"only this machine can reach you: {format_address(local)} is loopback"
        if lan:  # IPv6 addresses only, and an IPv4 socket
            return "only this machine can reach you over IPv4; --bind :: for IPv6"
        return "only this machine can reach you: no network interface but loopback is up"
    listed = ", ".join(addresses[:REACH_LISTED])
    more = len(addresses) - REACH_LISTED
    return f"others can reach you at {listed}" + (f" and {more} more" if more > 0 else "")


def who(peer: Address, nick: str) -> str:
    return f"{escape(nick)} ({format_address(peer)})" if nick else format_address(peer)


def clock(wall: float | None = None, *, seconds: bool = True) -> str:
    return time.strftime("%H:%M:%S" if seconds else "%H:%M", time.localtime(wall))


def deliveries(count: int) -> str:
    """ "1 delivery", "2 deliveries"."""
    return f"{count} delivery" if count == 1 else f"{count} deliveries"


def duration(seconds: float) -> str:
    """A round trip or delay for people: "0.4 ms", "12 ms", "1.5 s"."""
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.1f} s"


def span(seconds: float) -> str:
    """How long a message is kept yet, roughly: "7 days", "5 h", "12 min", "40 s"."""
    for unit, length in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            count = round(seconds / length)
            return f"{count} {unit}s" if unit == "day" and count != 1 else f"{count} {unit}"
    return f"{max(0, round(seconds))} s"


def size(count: int) -> str:
    """A file size as people read it: "900 B", "12.5 KiB", "3.1 MiB"."""
    value, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"


def ago(seconds: float | None) -> str:
    """How long ago we last heard from a peer: "3 s ago", "2 min ago", or "never"."""
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    return f"{seconds / 60:.0f} min ago"


class Names:
    """The name each peer is shown by. Nicknames may collide, and a nickname is never
    taken for a person: a peer is its address here (its session in the core), so two
    peers called bob are shown as "bob" and "bob (2)", numbered in the order they were
    first seen. A peer keeps its name while its nickname stays the same, also when it
    leaves and comes back, so that a conversation never changes who said what."""

    REMEMBERED = 1024
    """Peers whose names are kept; past that, the one seen longest ago is forgotten."""

    def __init__(self) -> None:
        self._names: dict[Address, tuple[str, str]] = {}
        """peer -> (its nickname, the name it is shown by)."""

    def of(self, peer: Address, nick: str) -> str:
        """The name `peer`, calling itself `nick`, is shown by (not yet escaped); "" for
        a peer whose nickname is not known yet."""
        if not nick:
            return ""
        known = self._names.get(peer)
        if known is not None and known[0] == nick:
            return known[1]
        taken = {name for other, (_, name) in self._names.items() if other != peer}
        name, number = nick, 1
        while name in taken:
            number += 1
            name = f"{nick} ({number})"
        self._names.pop(peer, None)
        self._names[peer] = (nick, name)
        if len(self._names) > self.REMEMBERED:
            del self._names[next(iter(self._names))]
        return name


def describe(
    event: Event, texts: dict[int, str] | None = None, names: Names | None = None
) -> str | None:
    """The line-mode text of an event (without the time), or None for a silent one.
    `names` tells peers with the same nickname apart."""

    def shown(peer: Address, nick: str) -> str:
        return nick if names is None else names.of(peer, nick)

    if isinstance(event, MessageReceived) and event.dialect == "raw":
        where = f"@{format_address(event.peer)} (raw, {event.encoding})"
        return f"{where}: {escape(event.text)}"
    if isinstance(event, MessageReceived) and event.dialect == "ipmsg":
        name = escape(shown(event.peer, event.nick)) or format_address(event.peer)
        return f"@{name} (IPMsg, {event.encoding}): {escape(event.text)}"
    if isinstance(event, FileOffered):
        return (
            f"* {who(event.peer, shown(event.peer, event.nick))} offered a file"
            f" {escape(event.name)} ({size(event.size)}), not supported"
        )
    if isinstance(event, PeerJoined) and event.dialect == "ipmsg":
        about = ", ".join(
            ["IP Messenger"]
            + ([f"group {escape(event.group)}"] if event.group else [])
            + ([f"host {escape(event.host)}"] if event.host else [])
        )
        return f"* {who(event.peer, shown(event.peer, event.nick))} joined ({about})"
    if isinstance(event, MessageReceived):
        name = escape(shown(event.peer, event.nick)) or "?"
        if event.room:
            return f"#{event.room} {name}: {escape(event.text)}"
        return f"@{name}: {escape(event.text)}"
    if isinstance(event, PeerJoined):
        verb = "restarted" if event.restarted else "joined"
        rooms = ", ".join(f"#{room}" for room in event.rooms)
        return f"* {who(event.peer, shown(event.peer, event.nick))} {verb}" + (
            f" {rooms}" if rooms else ""
        )
    if isinstance(event, MemberJoined | MemberLeft):
        verb = "joined" if isinstance(event, MemberJoined) else "left"
        return f"* {who(event.peer, shown(event.peer, event.nick))} {verb} #{event.room}"
    if isinstance(event, VersionMismatched):
        return (
            f"* {format_address(event.peer)} runs udpchat protocol version {event.version};"
            f" this one speaks version {VERSION}, and the two cannot chat"
            f" ({'that one' if event.version < VERSION else 'this one'} needs updating)"
        )
    if isinstance(event, PeerLeft):
        how = "left" if event.reason is LeaveReason.BYE else f"left ({event.reason.value})"
        return f"* {who(event.peer, shown(event.peer, event.nick))} {how}"
    if isinstance(event, PeerRenamed):
        old_name = shown(event.peer, event.old_nick)
        return (
            f"* {escape(old_name)} ({format_address(event.peer)})"
            f" is now {escape(shown(event.peer, event.new_nick))}"
        )
    if isinstance(event, DeliveryFailed):
        text = (texts or {}).get(event.message_id)
        quoted = f' "{escape(_shorten(text))}"' if text is not None else ""
        to = f" to {format_address(event.peer)}" if event.peer is not None else ""
        return (
            f"* message {event.message_id}{quoted}{to}"
            f" failed after {event.elapsed:.1f} s: {event.reason}"
        )
    if isinstance(event, MessageHeld):
        text = (texts or {}).get(event.message_id)
        quoted = f' "{escape(_shorten(text))}"' if text is not None else ""
        name = escape(shown(event.peer, event.nick)) if event.peer else escape(event.nick)
        return (
            f"* queued{quoted}: {escape(event.reason)}; it goes when {name or 'the peer'} is"
            f" back (kept {span(event.expires_in)})"
        )
    if isinstance(event, DatagramRejected):
        return describe_rejection(event)
    if isinstance(event, DatagramsRefused):
        hint = REFUSAL_HINTS.get(event.reason, "")
        return (
            f"* {format_address(event.peer)} cannot authenticate what we send"
            f" ({event.reason.value}){': ' + hint if hint else ''}"
        )
    if isinstance(event, SendFailed):
        many = f" ({event.count} datagrams)" if event.count > 1 else ""
        return f"* could not send to {format_address(event.peer)}{many}: {event.reason}"
    if isinstance(event, HistoryFailed):
        return f"* history off for this run: {event.reason}"
    return None  # MessageDelivered, RawMessageSent: silent in line mode


def describe_rejection(event: DatagramRejected) -> str:
    """ "* 3 datagrams from 10.0.0.5:9000 failed authentication (…): different key?", or
    for drops from several addresses, "… from 12 sources, the last 10.0.0.5:9000 …"."""
    source = format_address(event.peer)
    if event.sources > 1:
        many = "1000 or more" if event.sources >= 1000 else str(event.sources)
        source = f"{many} sources, the last {source}"
    count = f"{event.count} datagrams" if event.count > 1 else "a datagram"
    hint = AUTH_HINTS.get(event.reason)
    reason = f"{event.reason.value} ({event.detail})" if event.detail else event.reason.value
    if hint is not None:
        return f"* {count} from {source} failed authentication ({reason}): {hint}"
    preview = f': "{escape(_shorten(event.preview))}"' if event.preview else ""
    return f"* dropped {count} from {source}: {reason}{preview}"


AUTH_HINTS = {
    RejectReason.AUTHENTICATION_FAILED: "different key, or sealed for another peer?",
    RejectReason.NOT_FOR_ANYONE: "forged by someone who has the key?",
    RejectReason.REPLAYED: "a copy of an earlier datagram, dropped",
    RejectReason.CLOCK_SKEW: "replayed, or the clocks differ by over 60 s",
    RejectReason.NOT_SEALED: "the peer has no shared key",
    RejectReason.SEALED_WITHOUT_KEY: "the peer uses a shared key (--key-file, --ask-key)",
}
"""What to tell the user about each shared-key failure the core reports."""

REFUSAL_HINTS = {
    RejectReason.AUTHENTICATION_FAILED: "different key?",
    RejectReason.NOT_SEALED: "it uses a shared key and we have none (--key-file, --ask-key)",
    RejectReason.SEALED_WITHOUT_KEY: "it has no shared key",
    RejectReason.CLOCK_SKEW: "the clocks differ by over 60 s",
}
"""What to tell the user when a peer says it cannot authenticate our datagrams."""


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_NAMES = {
    MessageReceived: "message_received",
    FileOffered: "file_offered",
    MessageDelivered: "message_delivered",
    MessageHeld: "message_queued",
    RawMessageSent: "raw_message_sent",
    DeliveryFailed: "delivery_failed",
    PeerJoined: "peer_joined",
    PeerLeft: "peer_left",
    PeerRenamed: "peer_renamed",
    MemberJoined: "member_joined",
    MemberLeft: "member_left",
    VersionMismatched: "version_mismatched",
    DatagramRejected: "datagram_rejected",
    DatagramsRefused: "datagrams_refused",
    SendFailed: "send_failed",
    HistoryFailed: "history_failed",
}


def to_json(event: Event, wall: float | None = None, extra: dict[str, Any] | None = None) -> str:
    """One JSON object (one line) for `--jsonl`: the event's fields plus its name and
    time (and `extra` fields). Bytes (a message key, an instance id) are written in hex."""
    record: dict[str, Any] = {"event": _NAMES[type(event)], "time": _iso(wall)}
    for name in event.__slots__:
        value = getattr(event, name)
        if isinstance(value, Enum):
            value = value.value
        elif isinstance(value, tuple) and name != "peer":
            value = list(value)
        elif isinstance(value, bytes):
            value = value.hex()
        record[name] = format_address(value) if name == "peer" and value else value
    record.update(extra or {})
    if isinstance(event, MessageReceived) and not event.room:
        # A direct message: `direct` names the conversation, as `room` names a room's.
        del record["room"]
        record["direct"] = True
    return _dumps(record)


STATE_MARKS = {
    "delivered": "✓",
    "partly delivered": "✓ partly",
    "failed": "✗ failed",
    "pending": "…",
    "sent": "→",
}
"""The mark after each of our own messages in the history: what became of it ("sent":
to a raw peer, which acknowledges nothing)."""


def stored_line(message: StoredMessage) -> str:
    """A message of the history for people: "2026-12-04 14:02:19 #lobby bob: text", with
    the mark of its outcome after one of ours. Peer text is escaped, as in the chat."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(message.sent_at_ms / 1000))
    who = escape(message.nick or message.peer) or "?"
    line = f"{when} {escape(message.conversation)} {who}: {escape(message.text)}"
    if message.direction == "out":
        line += f"  {STATE_MARKS.get(message.state, '…')}"
    return line


def stored_record(message: StoredMessage, name: str = "stored_message") -> str:
    """A message of the history as a JSON line named `name`: every field, its times also
    in ISO 8601 (local time), and "time", when it was sent, as on the chat's JSON lines."""
    fields: dict[str, Any] = {
        field: getattr(message, field) for field in type(message).__dataclass_fields__
    }
    fields["sent_at"] = _iso(message.sent_at_ms / 1000)
    received = message.received_at_ms
    fields["received_at"] = _iso(received / 1000) if received is not None else None
    return json_line(name, message.sent_at_ms / 1000, **fields)


def json_line(name: str, wall: float | None = None, **fields: Any) -> str:
    """A JSON line for something that is not a core event (ready, sent, error)."""
    return _dumps({"event": name, "time": _iso(wall), **fields})


def _dumps(record: dict[str, Any]) -> str:
    text = json.dumps(record, ensure_ascii=False)
    text = _UNSAFE_JSON.sub(lambda m: _json_escape(m.group()), text)
    # Marks past MAX_MARKS become JSON escapes: a script still reads every one.
    return _cap_marks(text, lambda rest: "".join(map(_json_escape, rest)))


def _json_escape(char: str) -> str:
    """`char` as a JSON escape (a surrogate pair outside the BMP)."""
    units = char.encode("utf-16-be")
    return "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))


def _iso(wall: float | None) -> str:
    """ISO 8601 in local time with milliseconds (rounded: a time stored in ms, such as a
    message's in the history, comes back as it was)."""
    ms = round((time.time() if wall is None else wall) * 1000)
    moment = time.localtime(ms // 1000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", moment)
    return f"{stamp}.{ms % 1000:03d}{time.strftime('%z', moment)}"
