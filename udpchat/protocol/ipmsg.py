"""The IP Messenger packet format (IPMsg, FeiQ, iptux): pure encoding and decoding.

A packet is one UDP datagram of text, `Ver:PacketNo:SenderName:SenderHost:CommandNo:Extra`,
on port 2425. CommandNo is decimal: its low 8 bits are the command (mode), the rest are
options. Constant values are those of IP Messenger's own `ipmsg.h` (tables copied around
the web have wrong ones). Without `UTF8OPT`, names and text are in the sender's code
page (CP932 for Japanese IPMsg, GBK for FeiQ), so the fields are kept as bytes here and
decoded by the caller, per peer.

`decode` returns a `Packet` or raises `WireError` (and nothing else); `encode` is its
inverse. `entry_extra` and `read_entry` handle the extra of entry packets (nickname,
group, and the UTF-8 `UN/HN/NN/GN` fields); `Seen` remembers packet numbers per peer
over a window, so a retransmitted SENDMSG is shown once while a reordered one is not lost.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from .errors import RejectReason, WireError

PORT = 2425

# Commands (the low 8 bits of CommandNo).
NOOPERATION = 0x00
BR_ENTRY = 0x01
BR_EXIT = 0x02
ANSENTRY = 0x03
BR_ABSENCE = 0x04
SENDMSG = 0x20
RECVMSG = 0x21
READMSG = 0x30
GETINFO = 0x40
SENDINFO = 0x41
GETABSENCEINFO = 0x50
SENDABSENCEINFO = 0x51
GETPUBKEY = 0x72

# Options for every command.
ABSENCEOPT = 0x100
SERVEROPT = 0x200
DIALUPOPT = 0x10000
FILEATTACHOPT = 0x200000
ENCRYPTOPT = 0x400000
UTF8OPT = 0x800000
CAPUTF8OPT = 0x1000000
# Options for SENDMSG (0x100 is SENDCHECKOPT here, ABSENCEOPT on entry packets).
SENDCHECKOPT = 0x100
SECRETOPT = 0x200
BROADCASTOPT = 0x400
MULTICASTOPT = 0x800
AUTORETOPT = 0x2000
RETRYOPT = 0x4000
PASSWORDOPT = 0x8000
NOLOGOPT = 0x20000
NOADDLISTOPT = 0x80000
READCHECKOPT = 0x100000

MODE_MASK = 0xFF
VERSION = b"1_udpchat"
"""What we write in the version field: FeiQ only talks to versions starting with 1."""
MAX_PACKET = 65507
MAX_FIELD = 256
"""Longest version, name or host field accepted (real ones are a few dozen bytes)."""
_DIGITS = frozenset(b"0123456789")


class Packet(NamedTuple):
    version: bytes
    """As sent: "1", "1_iptux 0.8.3", FeiQ's "1_lbt6_0#128#MAC#..."."""
    number: int
    """The packet number: unique per sender, increasing."""
    user: bytes
    """The sender's login name, in its encoding."""
    host: bytes
    """The sender's host name, in its encoding."""
    command: int
    """Command and options (`mode`, `options`)."""
    extra: bytes = b""
    """The rest: a message's text, an entry's nickname and group, an acknowledged
    packet number."""

    @property
    def mode(self) -> int:
        return self.command & MODE_MASK

    @property
    def options(self) -> int:
        return self.command & ~MODE_MASK


def decode(data: bytes) -> Packet:
    """Parse one IPMsg datagram; WireError (reason NOT_UDPCHAT for what is not IPMsg at
    all, BAD_VALUE or TOO_LONG for a broken one) on anything else."""
    if len(data) > MAX_PACKET:
        raise WireError(RejectReason.TOO_LONG)
    fields = data.split(b":", 5)
    if len(fields) < 5 or fields[0][:1] != b"1":
        raise WireError(RejectReason.NOT_UDPCHAT)
    version, number, user, host, command = fields[:5]
    if not _is_number(number) or not _is_number(command):
        raise WireError(RejectReason.BAD_VALUE, "IPMsg number")
    if max(len(version), len(user), len(host)) > MAX_FIELD:
        raise WireError(RejectReason.BAD_VALUE, "IPMsg field length")
    value = int(command)
    if value >= 1 << 32:
        raise WireError(RejectReason.BAD_VALUE, "IPMsg command")
    extra = fields[5] if len(fields) == 6 else b""
    return Packet(version, int(number), user, host, value, extra)


def _is_number(field: bytes) -> bool:
    return 0 < len(field) <= 20 and all(byte in _DIGITS for byte in field)


def encode(packet: Packet) -> bytes:
    """The bytes of `packet`. ValueError for a name or host holding `:` (replace it with
    `safe_name` first) or a packet longer than one datagram."""
    for field in (packet.version, packet.user, packet.host):
        if b":" in field:
            raise ValueError("IPMsg fields cannot hold ':'")
    head = b":".join(
        (
            packet.version,
            str(packet.number).encode(),
            packet.user,
            packet.host,
            str(packet.command).encode(),
        )
    )
    data = head + b":" + packet.extra
    if len(data) > MAX_PACKET:
        raise ValueError("an IPMsg packet holds at most 65,507 bytes")
    return data


def safe_name(name: str) -> str:
    """A name IPMsg can carry: `:` (the field separator) becomes `;`."""
    return name.replace(":", ";")


def entry_extra(
    nick: str,
    group: str,
    user: str,
    host: str,
    encoding: str = "utf-8",
    mark: tuple[str, str] | None = None,
) -> bytes:
    """The extra of BR_ENTRY, ANSENTRY and BR_ABSENCE, for a sender with `CAPUTF8OPT`
    and without `UTF8OPT` (entry packets never carry it): nickname and group in
    `encoding` (a client without the extension reads them in its code page; characters
    the encoding lacks become "?"), then the extension's `UN/HN/NN/GN` fields in UTF-8,
    and `mark` as one more (key, value) field if given."""
    names = "\0".join((safe_name(nick), safe_name(group)))
    fields = f"UN:{safe_name(user)}\nHN:{safe_name(host)}\nNN:{nick}\nGN:{group}\n"
    if mark is not None:
        fields += f"{mark[0]}:{mark[1]}\n"
    return names.encode(encoding, errors="replace") + b"\0\n" + fields.encode("utf-8")


class Entry(NamedTuple):
    nick: str
    group: str


def read_fields(extra: bytes) -> dict[str, str]:
    """The UTF-8 `KEY:value` fields after `\\0\\n` in an entry's extra (UN, HN, NN,
    GN, and any other), bad bytes escaped; {} when there are none."""
    _, sep, tail = extra.partition(b"\0\n")
    fields: dict[str, str] = {}
    if not sep:
        return fields
    for line in tail.split(b"\n")[:16]:
        key, sep, value = line.partition(b":")
        if sep and 0 < len(key) <= 8:
            fields[key.decode("utf-8", "replace")] = value.decode("utf-8", "backslashreplace")
    return fields


def read_entry(extra: bytes, encoding: str) -> Entry:
    """An entry packet's nickname and group: from the UTF-8 `NN`/`GN` fields when
    present, else from the leading `nick\\0group` in `encoding` (bad bytes escaped)."""
    head = extra.partition(b"\0\n")[0]
    utf8 = read_fields(extra)
    nick_raw, _, rest = head.partition(b"\0")
    group_raw = rest.split(b"\0", 1)[0]
    nick = utf8.get("NN") or nick_raw.decode(encoding, errors="backslashreplace")
    group = utf8.get("GN") or group_raw.decode(encoding, errors="backslashreplace")
    return Entry(nick, group)


MAX_FILES = 16
"""File offers read from one message; the rest are not shown."""


def read_files(attachments: bytes, encoding: str) -> list[tuple[str, int]]:
    """The files a `SENDMSG|FILEATTACHOPT` offers, from what follows the text's NUL:
    entries `fileID:name:size:mtime:attr:` (numbers in hex, `:` in a name doubled),
    separated by `\\a`. (name, size) per readable entry; broken ones are skipped."""
    files = []
    for entry in attachments.split(b"\a")[:MAX_FILES]:
        entry = entry.strip(b"\0")
        _, sep, rest = entry.partition(b":")
        if not sep:
            continue
        name, index = bytearray(), 0
        while index < len(rest):
            if rest[index : index + 2] == b"::":
                name += b":"
                index += 2
            elif rest[index : index + 1] == b":":
                break
            else:
                name += rest[index : index + 1]
                index += 1
        size_field = rest[index + 1 :].split(b":", 1)[0]
        try:
            size = int(size_field, 16)
        except ValueError:
            continue
        if name and 0 <= size < 1 << 64:
            files.append((bytes(name).decode(encoding, errors="backslashreplace"), size))
    return files


def message_text(packet: Packet, encoding: str) -> str:
    """A SENDMSG's text: the extra up to its first NUL (files and the like follow it),
    in UTF-8 with `UTF8OPT`, else in the peer's `encoding`."""
    text = packet.extra.split(b"\0", 1)[0]
    chosen = "utf-8" if packet.options & UTF8OPT else encoding
    return text.decode(chosen, errors="backslashreplace").replace("\r\n", "\n")


def must_answer(packet: Packet) -> bool:
    """Whether a SENDMSG asks for a RECVMSG: it has SENDCHECKOPT and neither
    BROADCASTOPT nor AUTORETOPT (those are never answered)."""
    options = packet.options
    return bool(options & SENDCHECKOPT) and not options & (BROADCASTOPT | AUTORETOPT)


class Seen:
    """Packet numbers already taken from each peer, over a window: a retransmitted
    SENDMSG is shown once, and one that arrives after a later one is still shown
    (iptux's rule, "above the highest seen", would lose it)."""

    def __init__(self, window: int = 256, peers: int = 256) -> None:
        self._window = window
        self._peers = peers
        self._seen: OrderedDict[object, OrderedDict[int, None]] = OrderedDict()

    def first_time(self, peer: object, number: int) -> bool:
        """True the first time `number` comes from `peer` (within the window)."""
        numbers = self._seen.get(peer)
        if numbers is None:
            numbers = self._seen[peer] = OrderedDict()
            if len(self._seen) > self._peers:
                self._seen.popitem(last=False)
        self._seen.move_to_end(peer)
        if number in numbers:
            return False
        numbers[number] = None
        if len(numbers) > self._window:
            numbers.popitem(last=False)
        return True


class PacketNumbers:
    """Our packet numbers: seeded from the wall clock (seconds), strictly increasing, so
    that iptux, which drops a SENDMSG numbered no higher than the last it saw from us,
    takes every one, also after we restart."""

    def __init__(self, wall_seconds: float) -> None:
        self._last = int(wall_seconds)

    def next(self, wall_seconds: float) -> int:
        self._last = max(self._last + 1, int(wall_seconds))
        return self._last
