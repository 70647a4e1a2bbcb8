"""The wire format of docs/protocol.md, byte for byte.

One table of (name, record, bytes) cases drives both the encoder and the decoder, and
every `wire NAME` example in docs/protocol.md must be in that table with the same bytes,
so the document and the code cannot drift apart. Then: malformed datagrams, property
tests of the decoder, and whole messages carried between two `ChatSession`s.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memnet import ALICE, ALICE_SESSION, BOB, BOB_SESSION, MemNet, pair

from udpchat.protocol import ChatSession, MessageReceived, MessageTooLong, RejectReason, WireError
from udpchat.protocol.wire import (
    HELLO_MIN_SIZE,
    MAX_DATAGRAM,
    MAX_FRAGMENTS,
    MAX_MESSAGE_BYTES,
    REFUSAL_CODES,
    Ack,
    Announce,
    Bye,
    Conversation,
    Data,
    Datagram,
    Hello,
    Kind,
    Ping,
    Pong,
    Refused,
    decode,
    encode,
)

R = RejectReason

PROTOCOL_MD = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

S = bytes(range(1, 9))  # "01 02 03 04 05 06 07 08", the sender of the doc's examples
T = bytes(range(0x11, 0x19))  # "11 12 ... 18", the acknowledging peer
S_HEX = "01 02 03 04 05 06 07 08"
T_HEX = "11 12 13 14 15 16 17 18"
INST = bytes.fromhex("a1a2a3a4a5a6a7a8")  # the sender's instance id
INST_HEX = " a1 a2 a3 a4 a5 a6 a7 a8 "
K = INST + bytes(7) + b"\x01"  # the key of the sender's first message
K_HEX = INST_HEX + "00 00 00 00 00 00 00 01 "
Z_HEX = " 00" * 8 + " "  # no instance id; twice: no message key

ROOM, DIRECT = Conversation.ROOM, Conversation.DIRECT
MEMBERSHIP, ROSTER = Conversation.MEMBERSHIP, Conversation.ROSTER

# fmt: off
CASES: list[tuple[str, Datagram, str]] = [
    # -- the examples of docs/protocol.md, copied by hand ---------------------------
    ("hello-wants-reply", Hello(S, "alice", wants_reply=True, rooms=("lobby",), instance=INST),
     "55 43 03 01" + S_HEX + "01" + INST_HEX + "05 61 6c 69 63 65  00 00 00 00 01"
     + "05 6c 6f 62 62 79" + " 00" * 26),
    ("hello", Hello(S, "alice", rooms_version=2, rooms=("lobby", "dev"), instance=INST),
     "55 43 03 01" + S_HEX + "00" + INST_HEX + "05 61 6c 69 63 65  00 00 00 02 02"
     + "05 6c 6f 62 62 79  03 64 65 76"),
    ("hello-rooms-follow", Hello(S, "alice", rooms_version=9, rooms_follow=True, instance=INST),
     "55 43 03 01" + S_HEX + "02" + INST_HEX + "05 61 6c 69 63 65  00 00 00 09 00"),
    ("bye", Bye(S),
     "55 43 03 02" + S_HEX),
    ("bye-ack", Bye(T, S, 5, 0b1),
     "55 43 03 02" + T_HEX + S_HEX
     + "00 00 00 00 00 00 00 05  00 00 00 00 00 00 00 01"),
    ("ping", Ping(S, 7, 12),
     "55 43 03 03" + S_HEX + "00 00 00 00 00 00 00 07  00 00 00 00 00 00 00 0c"),
    ("pong", Pong(S, 7),
     "55 43 03 04" + S_HEX + "00 00 00 00 00 00 00 07"),
    ("announce", Announce(S, bytes.fromhex("a1a2a3a4a5a6a7a8"), "alice", 0, ("lobby",)),
     "55 43 03 09" + S_HEX + "a1 a2 a3 a4 a5 a6 a7 a8  05 61 6c 69 63 65"
     + "00 00 00 00 01 05 6c 6f 62 62 79" + " 00" * 27),
    ("refused", Refused(T, RejectReason.AUTHENTICATION_FAILED),
     "55 43 03 08" + T_HEX + "01"),
    ("data-first",
     Data(S, 0, 0, 0, 1, "hi 你好".encode(), 1764000000000, "alice", ROOM, "lobby", K),
     "55 43 03 05" + S_HEX
     + "00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  00 00 00 01"
     + "00 00 01 9a b6 97 e8 00" + K_HEX + "05 61 6c 69 63 65  01 05 6c 6f 62 62 79"
     + "68 69 20 e4 bd a0 e5 a5 bd"),
    ("data-direct",
     Data(S, 1, 0, 0, 1, b"psst", 1764000000000, "alice", DIRECT, "", INST + bytes(7) + b"\x02"),
     "55 43 03 05" + S_HEX
     + "00 00 00 00 00 00 00 01  00 00 00 00 00 00 00 00  00 00 00 01"
     + "00 00 01 9a b6 97 e8 00" + INST_HEX + "00 00 00 00 00 00 00 02"
     + "05 61 6c 69 63 65  00 00"
     + "70 73 73 74"),
    ("data-membership", Data(S, 2, 0, 0, 1, b"3\nlobby\ndev", 1764000000000, "alice", MEMBERSHIP),
     "55 43 03 05" + S_HEX
     + "00 00 00 00 00 00 00 02  00 00 00 00 00 00 00 00  00 00 00 01"
     + "00 00 01 9a b6 97 e8 00" + Z_HEX + Z_HEX + "05 61 6c 69 63 65  02 00"
     + "33 0a 6c 6f 62 62 79 0a  64 65 76"),
    ("data-roster", Data(S, 3, 0, 0, 1, b"10.0.0.3 9000", 1764000000000, "alice", ROSTER, "lobby"),
     "55 43 03 05" + S_HEX
     + "00 00 00 00 00 00 00 03  00 00 00 00 00 00 00 00  00 00 00 01"
     + "00 00 01 9a b6 97 e8 00" + Z_HEX + Z_HEX + "05 61 6c 69 63 65  03 05 6c 6f 62 62 79"
     + "31 30 2e 30 2e 30 2e 33  20 39 30 30 30"),
    ("data-later", Data(S, 5, 3, 1, 2, b"ld"),
     "55 43 03 05" + S_HEX
     + "00 00 00 00 00 00 00 05  00 00 00 00 00 00 00 03  00 01 00 02  6c 64"),
    ("ack", Ack(T, S, 5, 0b101, 3),
     "55 43 03 06" + T_HEX + S_HEX
     + "00 00 00 00 00 00 00 05  00 00 00 00 00 00 00 05  00 00 00 00 00 00 00 03"),
    # -- more cases ------------------------------------------------------------------
    ("hello-cjk-nick-no-rooms", Hello(S, "小明"),
     "55 43 03 01" + S_HEX + "00" + Z_HEX + "06 e5 b0 8f e6 98 8e  00 00 00 00 00"),
    ("hello-wants-reply-32-byte-nick", Hello(S, "🙂" * 8, wants_reply=True),
     "55 43 03 01" + S_HEX + "01" + Z_HEX + "20" + " f0 9f 99 82" * 8 + " 00 00 00 00 00"
     + " 00" * 5),
    ("ping-largest-token-and-base", Ping(T, 2**64 - 1, 2**64 - 1),
     "55 43 03 03" + T_HEX + " ff" * 16),
    ("data-empty-message", Data(T, 7, 7, 0, 1, b"", 0, "bob"),
     "55 43 03 05" + T_HEX
     + "00 00 00 00 00 00 00 07  00 00 00 00 00 00 00 07  00 00 00 01"
     + "00 00 00 00 00 00 00 00" + Z_HEX + Z_HEX + "03 62 6f 62  00 00"),
    # A fragment may end or start inside a character: this is the tail of U+1F600.
    ("data-fragment-inside-a-character", Data(S, 9, 2, 2, 3, b"\x9f\x98\x80"),
     "55 43 03 05" + S_HEX
     + "00 00 00 00 00 00 00 09  00 00 00 00 00 00 00 02  00 02 00 03  9f 98 80"),
    ("ack-every-bit", Ack(T, S, 2**64 - 1, 2**64 - 1, 2**64 - 1),
     "55 43 03 06" + T_HEX + S_HEX + " ff" * 24),
]
# fmt: on

CASE_PARAMS = [pytest.param(record, bytes.fromhex(hexes), id=name) for name, record, hexes in CASES]


def doc_examples() -> dict[str, bytes]:
    """Every ```wire NAME block of docs/protocol.md, as bytes."""
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    blocks = re.findall(r"^```wire[ \t]+(\S+)[ \t]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    examples: dict[str, bytes] = {}
    for name, body in blocks:
        assert name not in examples, f"two examples named {name!r} in protocol.md"
        examples[name] = bytes.fromhex(body)
    return examples


# -- the table -------------------------------------------------------------------


@pytest.mark.parametrize(("record", "data"), CASE_PARAMS)
def test_encoder_writes_the_bytes_of_the_table(record: Datagram, data: bytes) -> None:
    assert encode(record) == data


@pytest.mark.parametrize(("record", "data"), CASE_PARAMS)
def test_decoder_reads_the_record_of_the_table(record: Datagram, data: bytes) -> None:
    decoded = decode(data)
    # Records are NamedTuples: Ping(s, 7) == Pong(s, 7) as tuples, so the type counts too.
    assert type(decoded) is type(record)
    assert decoded == record


def test_doc_examples_are_found() -> None:
    # Guards the parser below: a renamed fence must not make the doc check vacuous.
    assert set(doc_examples()) >= {
        "hello",
        "bye",
        "bye-ack",
        "ping",
        "pong",
        "data-first",
        "ack",
        "refused",
    }


@pytest.mark.parametrize("name", sorted(doc_examples()))
def test_every_doc_example_is_in_the_table_byte_for_byte(name: str) -> None:
    table = {case_name: bytes.fromhex(hexes) for case_name, _, hexes in CASES}
    assert name in table, f"docs/protocol.md example {name!r} has no case in CASES"
    assert doc_examples()[name] == table[name]


def test_table_names_are_unique() -> None:
    names = [name for name, _, _ in CASES]
    assert len(names) == len(set(names))


def test_doc_examples_cover_every_kind() -> None:
    kinds = {type(decode(data)) for data in doc_examples().values()}
    assert kinds == {Hello, Bye, Ping, Pong, Data, Ack, Refused, Announce}


def test_hello_padding_is_ignored_whatever_it_holds() -> None:
    padded = encode(Hello(S, "alice", wants_reply=True))
    assert decode(padded[:-3] + b"xyz") == Hello(S, "alice", wants_reply=True)


def test_a_hello_answer_carrying_many_rooms_is_longer_than_64_bytes() -> None:
    rooms = tuple(f"room-{i}" for i in range(8))
    assert len(encode(Hello(S, "alice", rooms=rooms))) > HELLO_MIN_SIZE


# -- refusing to write what no peer could read ----------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(Hello(S, ""), id="empty-nick"),
        pytest.param(Hello(S, "a" * 33), id="33-byte-nick"),
        pytest.param(Hello(S, "你" * 11), id="33-byte-cjk-nick"),
        pytest.param(Bye(b"short"), id="short-session-id"),
        pytest.param(Data(S, 0, 0, 0, 1, b"x" * 1200, 0, "a"), id="data-over-1200-bytes"),
        pytest.param(Data(S, 0, 0, 0, 1, b"x", 0, ""), id="first-fragment-without-nick"),
        pytest.param(Data(S, 0, 0, 0, 1, b"x", 0, "a", ROOM), id="room-message-without-room"),
        pytest.param(Data(S, 0, 0, 0, 1, b"x", 0, "a", DIRECT, "lobby"), id="direct-in-a-room"),
    ],
)
def test_encoder_refuses_records_no_peer_could_read(record: Datagram) -> None:
    with pytest.raises(ValueError):
        encode(record)


def test_largest_fragments_are_exactly_1200_bytes() -> None:
    nick = "n" * 32
    first = Data(S, 0, 0, 0, 2, b"x" * (1141 - 32 - 24), 0, nick, ROOM, "r" * 24)
    later = Data(S, 1, 0, 1, 2, b"x" * 1168)
    assert len(encode(first)) == len(encode(later)) == MAX_DATAGRAM


# -- malformed datagrams ("What a receiver does with malformed datagrams") --------------


def header(kind: int, *, version: int = 3, session: bytes = S) -> bytes:
    return b"UC" + bytes([version, kind]) + session


def hello_head(flags: bytes) -> bytes:
    """A HELLO's header, flags and instance id: what comes before its nick length."""
    return header(Kind.HELLO) + flags + INST


def data_fields(seq: int = 0, base: int = 0, index: int = 0, count: int = 1) -> bytes:
    return (
        header(Kind.DATA)
        + seq.to_bytes(8, "big")
        + base.to_bytes(8, "big")
        + index.to_bytes(2, "big")
        + count.to_bytes(2, "big")
    )


SENT_AT = (1764000000000).to_bytes(8, "big") + K  # and the message key

# fmt: off
MALFORMED: list[tuple[str, bytes, RejectReason, str]] = [
    ("empty", b"", R.NOT_UDPCHAT, ""),
    ("short-foreign", b"hi\n", R.NOT_UDPCHAT, ""),
    ("lone-U", b"U", R.NOT_UDPCHAT, ""),
    ("foreign-text", b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", R.NOT_UDPCHAT, ""),
    ("foreign-gbk-text", "你好，世界".encode("gbk"), R.NOT_UDPCHAT, ""),
    ("foreign-and-too-long", b"x" * 1500, R.NOT_UDPCHAT, ""),
    ("magic-only", b"UC", R.TRUNCATED_HEADER, ""),
    ("header-cut-short", header(Kind.PING)[:11], R.TRUNCATED_HEADER, ""),
    ("version-1", header(Kind.PING, version=1) + bytes(16), R.UNSUPPORTED_VERSION, "1"),
    ("version-2", header(Kind.PING, version=2) + bytes(16), R.UNSUPPORTED_VERSION, "2"),
    ("version-0", header(Kind.PING, version=0) + bytes(8), R.UNSUPPORTED_VERSION, "0"),
    ("longer-than-1200", data_fields(count=2, index=1) + bytes(1201 - 32),
     R.TOO_LONG, ""),
    ("kind-0", header(0) + bytes(8), R.UNKNOWN_KIND, "0"),
    ("kind-7-without-key", header(7), R.SEALED_WITHOUT_KEY, ""),
    ("kind-10", header(10), R.UNKNOWN_KIND, "10"),
    ("announce-short", header(9) + bytes(8), R.TRUNCATED, "ANNOUNCE"),
    ("announce-nick-cut", header(9) + bytes(8) + b"\x05ab", R.TRUNCATED, "ANNOUNCE"),
    ("announce-no-nick", header(9) + bytes(8) + b"\x00", R.BAD_NICK, "length"),
    ("announce-rooms-cut", header(9) + bytes(8) + b"\x01a" + bytes(4) + b"\x01\x03ab",
     R.TRUNCATED, "ANNOUNCE rooms"),
    ("refused-without-reason", header(Kind.REFUSED), R.BAD_LENGTH, "REFUSED"),
    ("refused-two-byte-body", header(Kind.REFUSED) + b"\x01\x01", R.BAD_LENGTH, "REFUSED"),
    ("refused-reason-0", header(Kind.REFUSED) + b"\x00", R.BAD_VALUE, "REFUSED reason"),
    ("refused-reason-5", header(Kind.REFUSED) + b"\x05", R.BAD_VALUE, "REFUSED reason"),
    ("kind-255", header(255) + bytes(20), R.UNKNOWN_KIND, "255"),
    ("hello-without-body", header(Kind.HELLO), R.TRUNCATED, "HELLO"),
    ("hello-flags-only", header(Kind.HELLO) + b"\x01", R.TRUNCATED, "HELLO"),
    ("hello-instance-cut", header(Kind.HELLO) + b"\x01" + INST[:5], R.TRUNCATED, "HELLO"),
    ("hello-nick-cut-short", hello_head(b"\x00") + b"\x05ali", R.TRUNCATED, "HELLO"),
    ("hello-nick-length-0", hello_head(b"\x00") + b"\x00" + bytes(50),
     R.BAD_NICK, "length"),
    ("hello-nick-length-33", hello_head(b"\x00") + b"\x21" + b"a" * 33,
     R.BAD_NICK, "length"),
    ("hello-nick-not-utf8", hello_head(b"\x00") + b"\x02\xff\xfe", R.BAD_NICK, "not UTF-8"),
    ("hello-nick-gbk", hello_head(b"\x00") + b"\x04" + "你好".encode("gbk"),
     R.BAD_NICK, "not UTF-8"),
    ("hello-without-rooms", hello_head(b"\x00") + b"\x01a", R.TRUNCATED, "HELLO"),
    ("hello-room-cut-short", hello_head(b"\x00") + b"\x01a" + bytes(4) + b"\x01\x05lob",
     R.TRUNCATED, "HELLO rooms"),
    ("hello-room-upper-case", hello_head(b"\x00") + b"\x01a" + bytes(4) + b"\x01\x05Lobby",
     R.BAD_VALUE, "room name"),
    ("hello-room-twice", hello_head(b"\x00") + b"\x01a" + bytes(4) + b"\x02\x01a\x01a",
     R.BAD_VALUE, "rooms"),
    ("hello-nine-rooms", hello_head(b"\x00") + b"\x01a" + bytes(4) + b"\x09"
     + b"".join(b"\x01" + bytes([0x61 + i]) for i in range(9)), R.BAD_VALUE, "rooms"),
    ("hello-follow-with-rooms", hello_head(b"\x02") + b"\x01a" + bytes(4) + b"\x01\x01a",
     R.BAD_VALUE, "HELLO rooms"),
    ("bye-with-body", header(Kind.BYE) + b"\x00", R.BAD_LENGTH, "BYE"),
    ("bye-ack-short", header(Kind.BYE) + bytes(23), R.BAD_LENGTH, "BYE"),
    ("ping-15-byte-body", header(Kind.PING) + bytes(15), R.BAD_LENGTH, "PING"),
    ("ping-17-byte-body", header(Kind.PING) + bytes(17), R.BAD_LENGTH, "PING"),
    ("ping-token-without-base", header(Kind.PING) + bytes(8), R.BAD_LENGTH, "PING"),
    ("pong-7-byte-token", header(Kind.PONG) + bytes(7), R.BAD_LENGTH, "PONG"),
    ("pong-9-byte-token", header(Kind.PONG) + bytes(9), R.BAD_LENGTH, "PONG"),
    ("pong-without-token", header(Kind.PONG), R.BAD_LENGTH, "PONG"),
    ("ack-too-short", header(Kind.ACK) + bytes(31), R.BAD_LENGTH, "ACK"),
    ("ack-too-long", header(Kind.ACK) + bytes(33), R.BAD_LENGTH, "ACK"),
    ("data-without-body", header(Kind.DATA), R.TRUNCATED, "DATA"),
    ("data-fixed-fields-cut", data_fields()[:31], R.TRUNCATED, "DATA"),
    ("data-first-without-sent-at", data_fields(), R.TRUNCATED, "DATA"),
    ("data-first-without-nick-length", data_fields() + SENT_AT, R.TRUNCATED, "DATA"),
    ("data-first-key-cut", data_fields() + SENT_AT[:20], R.TRUNCATED, "DATA"),
    ("data-first-nick-cut-short", data_fields() + SENT_AT + b"\x05al", R.TRUNCATED, "DATA"),
    ("data-first-nick-length-0", data_fields() + SENT_AT + b"\x00hi", R.BAD_NICK, "length"),
    ("data-first-nick-length-33", data_fields() + SENT_AT + b"\x21" + b"a" * 40,
     R.BAD_NICK, "length"),
    ("data-first-nick-not-utf8", data_fields() + SENT_AT + b"\x01\xff", R.BAD_NICK, "not UTF-8"),
    ("data-count-0", data_fields(count=0) + SENT_AT + b"\x01a", R.BAD_FRAGMENT, ""),
    ("data-count-59", data_fields(index=1, count=59), R.BAD_FRAGMENT, ""),
    ("data-index-equal-to-count", data_fields(index=2, count=2), R.BAD_FRAGMENT, ""),
    ("data-base-above-seq", data_fields(seq=3, base=4) + SENT_AT + b"\x01a", R.BASE_ABOVE_SEQ, ""),
    ("data-first-without-conversation", data_fields() + SENT_AT + b"\x01a", R.TRUNCATED, "DATA"),
    ("data-conversation-4", data_fields() + SENT_AT + b"\x01a\x04\x00", R.BAD_VALUE,
     "conversation"),
    ("data-room-without-name", data_fields() + SENT_AT + b"\x01a\x01\x00hi", R.BAD_VALUE,
     "conversation room"),
    ("data-direct-with-room", data_fields() + SENT_AT + b"\x01a\x00\x01xhi", R.BAD_VALUE,
     "conversation room"),
    ("data-room-cut-short", data_fields() + SENT_AT + b"\x01a\x01\x05lob", R.TRUNCATED, "DATA"),
    ("data-room-name-with-space", data_fields() + SENT_AT + b"\x01a\x01\x03a bhi", R.BAD_VALUE,
     "room name"),
]
# fmt: on


@pytest.mark.parametrize(
    ("data", "reason", "detail"),
    [pytest.param(data, reason, detail, id=name) for name, data, reason, detail in MALFORMED],
)
def test_malformed_datagram_is_refused_with_its_reason(
    data: bytes, reason: RejectReason, detail: str
) -> None:
    with pytest.raises(WireError) as caught:
        decode(data)
    assert (caught.value.reason, caught.value.detail) == (reason, detail)
    assert type(caught.value) is WireError  # never an AuthenticationError: no key here


def test_largest_valid_fragment_count_is_58() -> None:
    assert MAX_FRAGMENTS == 58
    last = decode(data_fields(seq=57, index=57, count=58))
    assert isinstance(last, Data)
    assert last.fragment_count == 58


# -- properties ----------------------------------------------------------------------

PROPERTY = settings(max_examples=400, deadline=None)

sessions = st.binary(min_size=8, max_size=8)
u64 = st.integers(0, 2**64 - 1)
# Nicknames of 1 to 32 bytes: short ones from all of Unicode (CJK, emoji, accents), and
# ASCII ones up to the limit.
nicks = st.one_of(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=8),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=32),
    st.sampled_from(["小明", "🙂" * 8, "Zoë", "a" * 32]),
)


@st.composite
def data_records(draw: st.DrawFn) -> Data:
    session = draw(sessions)
    seq = draw(u64)
    base = draw(st.integers(0, seq))
    count = draw(st.integers(1, MAX_FRAGMENTS))
    index = draw(st.integers(0, count - 1))
    if index:
        payload = draw(st.binary(max_size=MAX_DATAGRAM - 32))
        return Data(session, seq, base, index, count, payload)
    nick = draw(nicks)
    conversation = draw(st.sampled_from(Conversation))
    room = draw(rooms) if conversation in (ROOM, ROSTER) else ""
    space = 1141 - len(nick.encode()) - len(room.encode())
    payload = draw(st.binary(max_size=space) | st.text(max_size=space // 4).map(str.encode))
    key = draw(st.binary(min_size=16, max_size=16))
    return Data(session, seq, base, index, count, payload, draw(u64), nick, conversation, room, key)


rooms = st.sampled_from(["lobby", "dev", "小组", "a" * 24, "x.y-z_1"])


@st.composite
def hello_records(draw: st.DrawFn) -> Hello:
    follow = draw(st.booleans())
    listed = () if follow else tuple(draw(st.lists(rooms, max_size=5, unique=True)))
    version = draw(st.integers(0, 2**32 - 1))
    instance = draw(sessions)
    return Hello(
        draw(sessions), draw(nicks), draw(st.booleans()), version, listed, follow, instance
    )


records = st.one_of(
    hello_records(),
    st.builds(Bye, sessions, st.just(b""), st.just(0), st.just(0)),
    st.builds(Bye, sessions, sessions, u64, u64),
    st.builds(Ping, sessions, u64, u64),
    st.builds(Pong, sessions, u64),
    data_records(),
    st.builds(Ack, sessions, sessions, u64, u64, u64),
    st.builds(
        Refused, sessions, st.sampled_from(sorted(REFUSAL_CODES, key=REFUSAL_CODES.__getitem__))
    ),
)


@PROPERTY
@given(records)
def test_every_valid_record_survives_encode_then_decode(record: Datagram) -> None:
    data = encode(record)
    assert len(data) <= MAX_DATAGRAM
    decoded = decode(data)
    assert type(decoded) is type(record)
    assert decoded == record
    assert encode(decoded) == data


def decodes_or_wire_error(data: bytes) -> None:
    try:
        record = decode(data)
    except WireError:
        return
    # Whatever decodes is a record the encoder can write back.
    assert len(encode(record)) <= MAX_DATAGRAM


@PROPERTY
@given(st.binary(max_size=1300))
def test_decoding_arbitrary_bytes_raises_only_wire_error(data: bytes) -> None:
    decodes_or_wire_error(data)


@PROPERTY
@given(
    st.sampled_from([*Kind, 0, 7, 255]),
    sessions,
    st.binary(max_size=MAX_DATAGRAM),
)
def test_decoding_arbitrary_bodies_after_a_valid_header_raises_only_wire_error(
    kind: int, session: bytes, body: bytes
) -> None:
    decodes_or_wire_error(header(kind, session=session) + body)


@PROPERTY
@given(records, st.data())
def test_truncated_or_extended_valid_datagrams_raise_only_wire_error(
    record: Datagram, data: st.DataObject
) -> None:
    raw = encode(record)
    cut = data.draw(st.integers(0, len(raw)))
    extra = data.draw(st.binary(max_size=16))
    decodes_or_wire_error(raw[:cut])
    decodes_or_wire_error(raw + extra)


# -- whole messages between two sessions ----------------------------------------------


def fragments_for(text: str, nick: str, room: str = "lobby") -> int:
    """Datagrams docs/protocol.md says a message takes: the first fragment carries up to
    1141 - N - R bytes of text, every other one up to 1168."""
    size, first = len(text.encode()), 1141 - len(nick.encode()) - len(room.encode())
    return 1 if size <= first else 1 + math.ceil((size - first) / 1168)


FIRST_ROOM = 1141 - len("alice") - len("lobby")

MESSAGES = [
    pytest.param("hi", id="ascii"),
    pytest.param("你好，世界！今天下午三点开会。", id="cjk"),
    pytest.param("👋🏽 ok 🎉 👨‍👩‍👧", id="emoji-and-zwj"),
    pytest.param("", id="empty"),
    pytest.param("tab\tnul\x00cr\r\nbell\x07", id="control-characters"),
    pytest.param("x" * FIRST_ROOM, id="fills-the-first-fragment"),
    pytest.param("x" * (FIRST_ROOM + 1), id="one-byte-into-a-second-fragment"),
    pytest.param("x" * (FIRST_ROOM + 1168), id="fills-two-fragments"),
    pytest.param("é" * 3000, id="fragmented-two-byte-characters"),
    pytest.param("你" * 21845 + "!", id="65536-bytes-of-cjk"),
    pytest.param("😀" * 16384, id="65536-bytes-of-emoji"),
]


@pytest.mark.parametrize("text", MESSAGES)
def test_message_arrives_exactly_as_sent(text: str) -> None:
    net = pair()
    net.run_for(1)
    message_id = net.send(ALICE, text)
    net.run_until_settled()
    assert net.texts(BOB) == [text]
    received = net.events(BOB, MessageReceived)[0]
    assert received.nick == "alice"
    data = net.datagrams(src=ALICE, kind=Data)
    assert len(data) == fragments_for(text, "alice")
    assert {d.decoded(Data).fragment_count for d in data} == {len(data)}
    assert all(len(sent.data) <= MAX_DATAGRAM for sent in net.sent)
    assert net.session(ALICE).stats().messages_delivered == 1
    assert message_id == 1


def test_longest_message_with_longest_nick_fits_in_58_fragments() -> None:
    net = MemNet()
    nick = "🙂" * 8
    net.attach(ALICE, ChatSession(nick, session_id=ALICE_SESSION))
    net.attach(BOB, ChatSession("bob", session_id=BOB_SESSION))
    net.add_peer(ALICE, BOB)
    text = "😀" * (MAX_MESSAGE_BYTES // 4)
    net.send(ALICE, text)
    net.run_until_settled()
    assert net.texts(BOB) == [text]
    count = len(net.datagrams(src=ALICE, kind=Data))
    assert count == fragments_for(text, nick) <= MAX_FRAGMENTS


def test_message_of_65537_bytes_is_refused_before_anything_is_queued() -> None:
    net = pair()
    net.run_for(1)
    sent_before = len(net.sent)
    alice = net.session(ALICE)
    with pytest.raises(MessageTooLong):
        alice.send_message("你" * 21845 + "ab", net.now, sent_at_ms=0)
    assert alice.pending() == 0
    assert alice.stats().messages_sent == 0
    assert alice.datagrams_to_send(net.now) == []
    net.run_for(1)
    assert net.datagrams(kind=Data) == []
    assert len(net.sent) == sent_before
    # The session is unharmed, and the refused message used no message id.
    assert net.send(ALICE, "next") == 1
    net.run_until_settled()
    assert net.texts(BOB) == ["next"]
