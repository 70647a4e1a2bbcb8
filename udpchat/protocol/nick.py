"""The one rule for nicknames, used wherever a nickname is chosen: the command line, the
`/nick` command and the core itself.

A nickname is 1 to 32 bytes of UTF-8 (docs/protocol.md, "Limits") with no character that
could steer a terminal or reorder the text around it: no control characters, no line or
paragraph separators, no bidirectional overrides or isolates. Everything else is allowed,
emoji sequences (ZWJ) and any script included. Leading and trailing spaces are dropped.

Nicknames received from peers are not held to this rule (the wire only checks length and
UTF-8); the UI escapes whatever a peer sends before showing it.
"""

from __future__ import annotations

import unicodedata

from .errors import InvalidNick
from .wire import MAX_NICK_BYTES

_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_UNSAFE_CATEGORIES = frozenset({"Cc", "Zl", "Zp", "Cs"})


def validate_nick(nick: str) -> str:
    """`nick` without surrounding spaces, or InvalidNick with a one-line reason."""
    nick = nick.strip()
    if not nick:
        raise InvalidNick("a nickname cannot be empty")
    size = len(nick.encode("utf-8", "surrogatepass"))
    if size > MAX_NICK_BYTES:
        raise InvalidNick(f"a nickname is at most {MAX_NICK_BYTES} bytes of UTF-8, not {size}")
    for char in nick:
        if char in _BIDI_CONTROLS or unicodedata.category(char) in _UNSAFE_CATEGORIES:
            raise InvalidNick(
                f"a nickname cannot hold control or invisible characters (U+{ord(char):04X})"
            )
    return nick
