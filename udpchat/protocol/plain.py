"""Plain text peers ("raw"): `nc -u`, socat, a Windows network assistant (docs/protocol.md,
"Plain text peers").

Their datagrams are text and nothing else: no header, no acknowledgement. This module
is the dialect: whether a datagram from an unknown address is text at all, which
encoding it is in, how it reads as a message, and the bytes of a reply. Pure: the
receive half keeps the table of raw peers, the send half sends the replies.
"""

from __future__ import annotations

from . import ipmsg
from .errors import LocalProtocolError, WireError

ENCODINGS = ("utf-8", "gbk", "gb18030", "cp932", "hex")
"""What a raw peer's text can be read and written as (`/encoding`, `--encoding`); "hex"
shows the bytes as hex digits, and takes hex digits to send."""
MAX_RAW_DATAGRAM = 65507
"""The most a UDP datagram over IPv4 can carry: the longest reply."""
_ALLOWED_CONTROLS = frozenset("\t\n\r")


def check_raw_peer(encoding: str | None, *, keyed: bool) -> None:
    """Whether a raw peer may be added in `encoding` (None: guessed): LocalProtocolError
    in shared-key mode, where nothing unauthenticated is shown; ValueError for an
    encoding not in ENCODINGS."""
    if keyed:
        raise LocalProtocolError("a shared key and plain text peers do not mix")
    if encoding is not None and encoding not in ENCODINGS:
        raise ValueError(f"encodings: {', '.join(ENCODINGS)}")


def is_text(text: str) -> bool:
    """Whether decoded bytes read as text: printable, or tabs and line ends."""
    return all(char.isprintable() or char in _ALLOWED_CONTROLS for char in text)


def guess(data: bytes) -> str | None:
    """The encoding a first datagram from an unknown address is in: UTF-8 when it decodes
    as text, else GB18030 (a superset of GBK) when that does; None when neither does
    (binary: not a plain text peer)."""
    if not data:
        return None
    for encoding in ("utf-8", "gb18030"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if is_text(text):
            return encoding
    return None


def fits(data: bytes, encoding: str) -> bool:
    """Whether `data` reads as text in `encoding` ("hex" always does)."""
    if encoding == "hex":
        return True
    try:
        return is_text(data.decode(encoding))
    except UnicodeDecodeError:
        return False


def decode(data: bytes, encoding: str) -> str:
    """The message a datagram holds, read in `encoding`: line ends made `\\n` (from
    `\\r\\n` or `\\r`) and one final line end dropped. Bytes the encoding cannot read
    are shown as `\\xNN` escapes; "hex" shows every byte as two hex digits."""
    if encoding == "hex":
        return data.hex(" ")
    text = data.decode(encoding, errors="backslashreplace")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text[:-1] if text.endswith("\n") else text


def encode(text: str, encoding: str, line_end: str = "\n") -> bytes:
    """The datagram of a reply: `text` in `encoding` and one `line_end`; characters the
    encoding lacks become "?". With "hex", `text` is hex digits (spaces allowed) and is
    sent as those bytes, with no line end. ValueError (one line) for bad hex or a reply
    too long for one datagram."""
    if encoding == "hex":
        try:
            data = bytes.fromhex(text)
        except ValueError:
            raise ValueError("with hex, type pairs of hex digits, e.g. 48 65 6c 6c 6f") from None
    else:
        data = (text + line_end).encode(encoding, errors="replace")
    if len(data) > MAX_RAW_DATAGRAM:
        raise ValueError(f"{len(data)} bytes: one datagram to a raw peer holds at most 65,507")
    return data


def looks_like_ipmsg(data: bytes) -> bool:
    """An IP Messenger packet ("1:packet:user:host:command:..."): another dialect
    (`ipmsg`), not a raw peer's text."""
    try:
        ipmsg.decode(data)
    except WireError:
        return False
    return True
