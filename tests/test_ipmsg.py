"""The IP Messenger packet format (udpchat/protocol/ipmsg.py), table-driven: the packets
of real clients as the notes on IPMsg, FeiQ and iptux record them, malformed ones, and
the rules for answering, numbering and duplicates."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpchat.protocol import RejectReason, WireError
from udpchat.protocol import ipmsg as m

IPTUX_ANSENTRY = b"1_iptux 0.8.3:4:root:vm:259:nick\0\0icon-tux.png\0utf-8\0"
FEIQ_VERSION = b"1_lbt6_0#128#000C29D0A1B2#0#0#0#4001#9"


def test_constants_are_those_of_ipmsg_h() -> None:
    assert (m.BR_ENTRY, m.BR_EXIT, m.ANSENTRY, m.BR_ABSENCE) == (1, 2, 3, 4)
    assert (m.SENDMSG, m.RECVMSG, m.READMSG) == (0x20, 0x21, 0x30)
    assert (m.UTF8OPT, m.CAPUTF8OPT, m.FILEATTACHOPT) == (0x800000, 0x1000000, 0x200000)
    assert (m.SENDCHECKOPT, m.BROADCASTOPT, m.AUTORETOPT) == (0x100, 0x400, 0x2000)
    assert m.PORT == 2425


def test_an_iptux_answer_reads_as_ansentry_with_absenceopt() -> None:
    packet = m.decode(IPTUX_ANSENTRY)
    assert packet == m.Packet(
        b"1_iptux 0.8.3", 4, b"root", b"vm", 259, b"nick\0\0icon-tux.png\0utf-8\0"
    )
    assert (packet.mode, packet.options) == (m.ANSENTRY, m.ABSENCEOPT)
    assert m.read_entry(packet.extra, "utf-8") == m.Entry("nick", "")


def test_a_feiq_message_in_gbk_with_its_long_version_field() -> None:
    command = m.SENDMSG | m.SENDCHECKOPT
    data = FEIQ_VERSION + b":1764000000:feiq:PC-1:" + str(command).encode() + b":"
    packet = m.decode(data + "你好，飞秋\0".encode("gbk"))
    assert packet.version == FEIQ_VERSION and packet.number == 1764000000
    assert m.message_text(packet, "gbk") == "你好，飞秋"
    assert m.must_answer(packet)


def test_utf8opt_overrides_the_peers_encoding_and_crlf_is_normalised() -> None:
    command = m.SENDMSG | m.UTF8OPT
    packet = m.decode(b"1:7:u:h:" + str(command).encode() + b":" + "日本\r\n語".encode())
    assert m.message_text(packet, "cp932") == "日本\n語"
    assert not m.must_answer(packet)  # no SENDCHECKOPT: nothing to answer


@pytest.mark.parametrize("option", [m.BROADCASTOPT, m.AUTORETOPT])
def test_broadcast_and_auto_replies_are_never_answered(option: int) -> None:
    command = m.SENDMSG | m.SENDCHECKOPT | option
    assert not m.must_answer(m.Packet(b"1", 1, b"u", b"h", command, b"hi"))


def test_entry_extra_carries_the_utf8_extension_and_reads_back() -> None:
    extra = m.entry_extra("小明", "研发部", "xm", "pc:1", encoding="gbk")
    assert extra.startswith("小明\0研发部".encode("gbk") + b"\0\n")
    assert b"HN:pc;1\n" in extra and "NN:小明\n".encode() in extra
    assert m.read_entry(extra, "gbk") == m.Entry("小明", "研发部")
    # A client without the extension: the leading fields, in its code page.
    assert m.read_entry("老王\0".encode("gbk"), "gbk") == m.Entry("老王", "")


def test_encode_is_decodes_inverse_and_refuses_a_colon_in_a_field() -> None:
    packet = m.Packet(m.VERSION, 1764000001, b"alice", b"laptop", m.BR_ENTRY | m.CAPUTF8OPT)
    assert m.encode(packet) == b"1_udpchat:1764000001:alice:laptop:16777217:"
    assert m.decode(m.encode(packet)) == packet
    with pytest.raises(ValueError, match="':'"):
        m.encode(packet._replace(host=b"a:b"))
    assert m.safe_name("a:b") == "a;b"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"hello from nc", RejectReason.NOT_UDPCHAT),
        (b"2:1:u:h:32:hi", RejectReason.NOT_UDPCHAT),  # not version 1
        (b"1:1:u:h", RejectReason.NOT_UDPCHAT),  # no command field
        (b"1:x:u:h:32:hi", RejectReason.BAD_VALUE),
        (b"1:1:u:h:-32:hi", RejectReason.BAD_VALUE),
        (b"1:1:u:h:4294967296:hi", RejectReason.BAD_VALUE),
        (b"1:" + b"9" * 21 + b":u:h:32:", RejectReason.BAD_VALUE),
        (b"1:1:" + b"u" * 257 + b":h:32:", RejectReason.BAD_VALUE),
        (b"1:1:u:h:32:" + b"x" * 65_500, RejectReason.TOO_LONG),
    ],
)
def test_malformed_packets_raise_wire_error_with_a_reason(
    data: bytes, reason: RejectReason
) -> None:
    with pytest.raises(WireError) as caught:
        m.decode(data)
    assert caught.value.reason is reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_only_wire_error(data: bytes) -> None:
    try:
        m.decode(b"1:" + data)
    except WireError:
        pass


def test_duplicates_are_seen_once_and_a_late_packet_is_not_lost() -> None:
    seen = m.Seen(window=4)
    peer = ("10.0.0.9", 2425)
    assert [seen.first_time(peer, n) for n in (10, 12, 11, 12, 10)] == [
        True,
        True,
        True,  # older than the highest, and new: iptux's rule would drop it
        False,
        False,
    ]
    assert seen.first_time(("10.0.0.8", 2425), 10)  # per peer


def test_packet_numbers_start_at_the_clock_and_only_grow() -> None:
    numbers = m.PacketNumbers(1764000000.7)
    assert [numbers.next(1764000000.9), numbers.next(1764000000.9)] == [1764000001, 1764000002]
    assert numbers.next(1764000100.0) == 1764000100  # the clock moved on
    assert numbers.next(1763999000.0) == 1764000101  # and back: never lower
