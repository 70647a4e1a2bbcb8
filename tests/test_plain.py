"""Plain text peers in the core (docs/protocol.md, "Plain text peers"): what reads as a
raw peer's message, in which encoding, and the exact bytes of a reply."""

from __future__ import annotations

import pytest
from memnet import BOB

from udpchat.protocol import (
    ChatSession,
    Config,
    DatagramRejected,
    Event,
    LocalProtocolError,
    MessageReceived,
    RawMessageSent,
    plain,
)
from udpchat.protocol.crypto import derive_master_key

NC = ("10.0.0.5", 8080)


def drain(session: ChatSession) -> list[Event]:
    events = []
    while (event := session.next_event()) is not None:
        events.append(event)
    return events


def shown(session: ChatSession) -> list[tuple[str, str]]:
    return [(e.text, e.encoding) for e in drain(session) if isinstance(e, MessageReceived)]


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (b"hello\n", "utf-8"),
        ("你好，世界\r\n".encode(), "utf-8"),
        ("你好，世界".encode("gbk"), "gb18030"),
        # Shift-JIS kana read as GB18030 are other characters: the guess is shown, and
        # the user sets cp932 with /encoding.
        ("こんにちは".encode("cp932"), "gb18030"),
        (b"\x00\x01\x02binary", None),
        (b"", None),
    ],
)
def test_the_encoding_of_a_first_datagram_is_guessed(data: bytes, encoding: str | None) -> None:
    assert plain.guess(data) == encoding


@pytest.mark.parametrize(
    ("data", "encoding", "text"),
    [
        (b"one line\n", "utf-8", "one line"),
        (b"crlf\r\n", "utf-8", "crlf"),
        (b"no line end", "utf-8", "no line end"),
        (b"two\r\nlines\r\n", "utf-8", "two\nlines"),
        (b"old mac\rline", "utf-8", "old mac\nline"),
        ("中文".encode("gbk"), "gbk", "中文"),
        ("日本語".encode("cp932"), "cp932", "日本語"),
        (b"\xff\xfe", "utf-8", "\\xff\\xfe"),
        (b"Hi\x00", "hex", "48 69 00"),
    ],
)
def test_a_datagram_reads_as_one_message_with_line_ends_normalised(
    data: bytes, encoding: str, text: str
) -> None:
    assert plain.decode(data, encoding) == text


def test_a_reply_is_the_text_in_the_peers_encoding_and_one_line_end() -> None:
    assert plain.encode("你好", "gbk") == "你好\n".encode("gbk")
    assert plain.encode("hi", "utf-8", "\r\n") == b"hi\r\n"
    assert plain.encode("snowman ☃", "gbk") == b"snowman ?\n"  # not in GBK
    assert plain.encode("48 69", "hex") == b"Hi"
    with pytest.raises(ValueError, match="pairs of hex digits"):
        plain.encode("not hex", "hex")
    with pytest.raises(ValueError, match="at most 65,507"):
        plain.encode("x" * 70_000, "utf-8")


def test_ipmsg_packets_are_not_raw_text() -> None:
    assert plain.looks_like_ipmsg(b"1:1764000000:alice:host:32:hello")
    assert plain.looks_like_ipmsg(b"1_lbt6_0#128#000C29D0A1B2#0#0#0#4001#9:1764000000:u:h:32:hi")
    assert not plain.looks_like_ipmsg(b"1: first item")
    assert not plain.looks_like_ipmsg(b"hello: a:b:c:d:e")


def test_text_from_an_unknown_address_is_a_raw_peers_message_and_it_can_be_answered() -> None:
    bob = ChatSession("bob")
    bob.receive_datagram("你好 udpchat\r\n".encode("gbk"), NC, 0.0)
    (event,) = drain(bob)
    assert event == MessageReceived(
        peer=NC, nick="", text="你好 udpchat", sent_at_ms=0, dialect="raw", encoding="gb18030"
    )
    (row,) = bob.peers(0.0)
    assert (row.peer, row.dialect, row.encoding, row.present) == (NC, "raw", "gb18030", True)
    message_id = bob.send_message("收到", 0.0, sent_at_ms=0, to=[NC])
    assert bob.datagrams_to_send(0.0) == [("收到\n".encode("gb18030"), NC)]
    assert drain(bob) == [RawMessageSent(message_id=message_id, peer=NC, encoding="gb18030")]
    assert bob.pending() == 0  # nothing to wait for: a raw peer cannot acknowledge
    assert bob.stats().raw_received == 1


def test_each_datagram_is_shown_once_in_arrival_order_and_a_new_encoding_is_guessed() -> None:
    bob = ChatSession("bob")
    for data in (b"first\n", b"first\n", "第二".encode("gbk"), b"\x00\x01"):
        bob.receive_datagram(data, NC, 0.0)
    assert shown(bob) == [
        ("first", "utf-8"),
        ("first", "utf-8"),  # the same text twice is two messages: nothing tells them apart
        ("第二", "gb18030"),
        ("00 01", "hex"),
    ]


def test_an_encoding_set_by_the_user_is_kept_for_reading_and_writing() -> None:
    bob = ChatSession("bob")
    bob.receive_datagram("こんにちは".encode("cp932"), NC, 0.0)
    assert shown(bob) == [("偙傫偵偪偼", "gb18030")]  # the guess, shown as such
    bob.add_raw_peer(NC, 0.0, "cp932")
    bob.receive_datagram("こんにちは".encode("cp932"), NC, 1.0)
    assert shown(bob) == [("こんにちは", "cp932")]
    bob.send_message("はい", 1.0, sent_at_ms=0, to=[NC])
    assert bob.datagrams_to_send(1.0) == [("はい\n".encode("cp932"), NC)]
    bob.add_raw_peer(NC, 1.5, "hex")
    bob.receive_datagram(b"AB", NC, 2.0)
    assert shown(bob) == [("41 42", "hex")]
    with pytest.raises(ValueError, match="encodings"):
        bob.add_raw_peer(NC, 2.0, "latin-9")


def test_the_default_encoding_for_raw_peers_is_configurable() -> None:
    bob = ChatSession("bob", config=Config(raw_encoding="cp932"))
    bob.receive_datagram("テスト".encode("cp932"), NC, 0.0)
    assert shown(bob) == [("テスト", "cp932")]


def test_a_message_to_raw_and_udpchat_peers_goes_to_each_in_its_own_way() -> None:
    bob = ChatSession("bob")
    bob.receive_datagram(b"hi\n", NC, 0.0)
    drain(bob)
    bob.add_peer(BOB, 0.0)
    message_id = bob.send_message("both", 0.0, sent_at_ms=0, to=[NC, BOB])
    out = bob.datagrams_to_send(0.0)
    assert (b"both\n", NC) in out
    assert bob.pending() == 1  # the udpchat peer acknowledges; the raw one cannot
    assert RawMessageSent(message_id=message_id, peer=NC, encoding="utf-8") in drain(bob)


def test_in_shared_key_mode_text_is_dropped_and_no_raw_peer_can_be_added() -> None:
    bob = ChatSession("bob", config=Config(key=derive_master_key(b"plain")))
    bob.receive_datagram(b"hello from nc\n", NC, 0.0)
    (event,) = drain(bob)
    assert isinstance(event, DatagramRejected)
    with pytest.raises(LocalProtocolError, match="do not mix"):
        bob.add_raw_peer(NC, 0.0)


def test_a_flood_of_text_from_many_source_ports_keeps_the_raw_table_bounded() -> None:
    bob = ChatSession("bob", config=Config(max_peers=64, unknown_rate=1e9, unknown_burst=1e9))
    for port in range(20000, 21000):
        bob.receive_datagram(f"spam {port}\n".encode(), ("10.0.0.66", port), 0.0)
    assert len(shown(bob)) == 1000  # each is a message; the UI limits what reaches the screen
    assert len([p for p in bob.peers(0.0) if p.dialect == "raw"]) == 64
    assert bob.stats().raw_received == 1000
    # Replies go only where asked, once: the flood made us send nothing.
    assert bob.datagrams_to_send(0.0) == []
