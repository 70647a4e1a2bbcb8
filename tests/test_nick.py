"""The one nickname rule (`validate_nick`), and the core applying it."""

from __future__ import annotations

import re

import pytest

from udpchat.protocol import ChatSession, InvalidNick, LocalProtocolError, validate_nick

ACCEPTED = [
    ("alice", "alice"),
    ("  bob  ", "bob"),
    ("小明", "小明"),
    ("👨‍👩‍👧", "👨‍👩‍👧"),  # ZWJ sequence: the joiners are allowed
    ("Zoë", "Zoë"),
    ("a" * 32, "a" * 32),
    ("עברית", "עברית"),  # right-to-left script, no override
]

REFUSED = [
    ("", "empty"),
    ("   ", "empty"),
    ("a" * 33, "at most 32 bytes"),
    ("你" * 11, "at most 32 bytes"),  # 33 bytes of UTF-8
    ("a\x1b[2Jb", "U+001B"),
    ("tab\there", "U+0009"),
    ("line\nbreak", "U+000A"),
    ("del\x7f", "U+007F"),
    ("c1\x9b", "U+009B"),
    ("evil\u202eelgoog", "U+202E"),
    ("iso\u2066late", "U+2066"),
    ("sep\u2028arator", "U+2028"),
    ("para\u2029graph", "U+2029"),
    ("half\ud800", "U+D800"),
]


@pytest.mark.parametrize(("nick", "normalized"), ACCEPTED)
def test_nickname_that_follows_the_rule_is_accepted_without_surrounding_spaces(
    nick: str, normalized: str
) -> None:
    assert validate_nick(nick) == normalized


@pytest.mark.parametrize(("nick", "why"), REFUSED)
def test_nickname_that_breaks_the_rule_is_refused_with_a_reason(nick: str, why: str) -> None:
    with pytest.raises(InvalidNick, match=re.escape(why)):
        validate_nick(nick)


def test_invalid_nick_is_a_local_protocol_error_and_a_value_error() -> None:
    assert issubclass(InvalidNick, LocalProtocolError) and issubclass(InvalidNick, ValueError)


def test_core_refuses_a_nickname_with_an_escape_sequence() -> None:
    with pytest.raises(InvalidNick):
        ChatSession("a\x1b]0;owned\x07")
    session = ChatSession("alice")
    with pytest.raises(InvalidNick):
        session.set_nick("bob\x1b[31m")
    assert session.nick == "alice"
