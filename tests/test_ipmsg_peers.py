"""IP Messenger users as peers (udpchat/protocol/ipmsg_peers.py), in memory with a virtual
clock: a table-driven IPMsg peer of our own plays IPMsg, FeiQ and iptux packet by packet
(docs/protocol.md, "IP Messenger peers")."""

from __future__ import annotations

import pytest

from udpchat.protocol import (
    ChatSession,
    Config,
    DatagramRejected,
    DeliveryFailed,
    Event,
    MessageDelivered,
    MessageReceived,
    PeerJoined,
    PeerLeft,
    PeerRenamed,
)
from udpchat.protocol import ipmsg as m
from udpchat.protocol.events import Address, FileOffered

TUX: Address = ("10.77.0.2", 2425)
FEIQ: Address = ("10.77.0.3", 2425)
LAN_BROADCAST: Address = ("10.77.0.255", 2425)
WALL = 1_764_835_200.0
"""Wall-clock seconds at now=0 (2025-12-04)."""
FEIQ_VERSION = b"1_lbt6_0#128#000C29D0A1B2#0#0#0#4001#9"


def chat(nick: str = "alice", **options: object) -> ChatSession:
    """A chat speaking IPMsg, started at 0; its BR_ENTRYs go nowhere unless given
    `ipmsg_broadcast`."""
    config = Config(
        ipmsg=True,
        ipmsg_user="al",
        ipmsg_host="box",
        ipmsg_group="dev",
        **options,  # type: ignore[arg-type]
    )
    session = ChatSession(nick, config=config, wall_offset=WALL)
    session.handle_timer(0.0)
    return session


def drain(session: ChatSession, now: float = 0.0) -> tuple[list[Event], list[m.Packet]]:
    """Events, and the IPMsg packets sent (each decoded)."""
    out = [m.decode(data) for data, _ in session.datagrams_to_send(now)]
    return events_of(session), out


def events_of(session: ChatSession) -> list[Event]:
    events = []
    while (event := session.next_event()) is not None:
        events.append(event)
    return events


def sent_to(session: ChatSession, now: float = 0.0) -> list[tuple[m.Packet, Address]]:
    return [(m.decode(data), addr) for data, addr in session.datagrams_to_send(now)]


def packet(number: int, command: int, extra: bytes, version: bytes = b"1_iptux 0.8.3") -> bytes:
    return m.encode(m.Packet(version, number, b"root", b"vm", command, extra))


def iptux_entry(number: int = 4, mode: int = m.BR_ENTRY, nick: bytes = b"tux") -> bytes:
    """What iptux 0.8.3 sends: ABSENCEOPT always, no CAPUTF8OPT, its icon and encoding."""
    return packet(number, mode | m.ABSENCEOPT, nick + b"\0\0icon-tux.png\0utf-8\0")


def joined(session: ChatSession, data: bytes, addr: Address = TUX, now: float = 0.0) -> None:
    session.receive_datagram(data, addr, now)
    drain(session, now)


# -- presence -------------------------------------------------------------------------


def test_start_broadcasts_br_entry_with_caputf8opt_and_the_utf8_fields_then_once_more() -> None:
    session = ChatSession(
        "小明",
        config=Config(ipmsg=True, ipmsg_broadcast=(LAN_BROADCAST,), ipmsg_user="xm"),
        wall_offset=WALL,
    )
    assert session.get_timer() == 0.0
    session.handle_timer(5.0)
    ((entry, addr),) = sent_to(session, 5.0)
    assert addr == LAN_BROADCAST
    assert entry.version == b"1_udpchat" and entry.number >= WALL
    assert (entry.mode, entry.options) == (m.BR_ENTRY, m.CAPUTF8OPT)
    assert not entry.options & m.UTF8OPT  # entry packets never carry it
    assert entry.extra.startswith("小明\0".encode("gb18030"))
    fields = m.read_fields(entry.extra)
    assert (fields["UN"], fields["NN"]) == ("xm", "小明")
    assert session.get_timer() == 7.0
    session.handle_timer(7.0)
    ((again, _),) = sent_to(session, 7.0)
    assert again.mode == m.BR_ENTRY and again.number > entry.number
    assert session.get_timer() is None


def test_br_entry_is_answered_by_a_unicast_ansentry_and_the_user_joins() -> None:
    alice = chat()
    drain(alice)
    entry = m.entry_extra("小红", "研发部", "xh", "pc-7") + b""
    alice.receive_datagram(packet(100, m.BR_ENTRY | m.CAPUTF8OPT, entry, version=b"1"), FEIQ, 0.1)
    assert events_of(alice) == [
        PeerJoined(peer=FEIQ, nick="小红", dialect="ipmsg", group="研发部", host="pc-7")
    ]
    ((answer, addr),) = sent_to(alice, 0.1)
    assert addr == FEIQ and answer.mode == m.ANSENTRY and answer.options & m.CAPUTF8OPT
    assert m.read_entry(answer.extra, "utf-8") == m.Entry("alice", "dev")
    (row,) = [p for p in alice.peers(0.2) if p.peer == FEIQ]
    assert (row.dialect, row.nick, row.group, row.host, row.present) == (
        "ipmsg",
        "小红",
        "研发部",
        "pc-7",
        True,
    )


def test_an_ansentry_joins_without_an_answer_and_iptux_names_its_encoding() -> None:
    alice = chat()
    drain(alice)
    alice.receive_datagram(iptux_entry(mode=m.ANSENTRY), TUX, 0.1)
    events, out = drain(alice, 0.1)
    assert events == [PeerJoined(peer=TUX, nick="tux", dialect="ipmsg", group="", host="vm")]
    assert out == []
    assert [p.encoding for p in alice.peers(0.1) if p.peer == TUX] == ["utf-8"]


def test_our_own_entry_looped_back_by_the_broadcast_is_not_a_peer() -> None:
    alice = chat(ipmsg_broadcast=(LAN_BROADCAST,))
    data, _ = alice.datagrams_to_send(0.0)[0]
    alice.receive_datagram(data, ("10.77.0.9", 2425), 0.0)
    events, out = drain(alice)
    assert events == [] and out == []


def test_absence_renames_and_exit_leaves() -> None:
    alice = chat()
    joined(alice, iptux_entry())
    alice.receive_datagram(iptux_entry(5, m.BR_ABSENCE, b"tux-away"), TUX, 1.0)
    events, out = drain(alice, 1.0)
    assert events == [PeerRenamed(peer=TUX, old_nick="tux", new_nick="tux-away")]
    assert out == []  # BR_ABSENCE is not answered
    alice.receive_datagram(packet(6, m.BR_EXIT, b"tux-away\0"), TUX, 2.0)
    events, _ = drain(alice, 2.0)
    assert [type(e) for e in events] == [PeerLeft]


def test_a_new_nickname_is_broadcast_as_br_absence_and_closing_says_br_exit() -> None:
    alice = chat(ipmsg_broadcast=(LAN_BROADCAST,))
    joined(alice, iptux_entry())
    alice.set_nick("alice2")
    ((absence, addr),) = sent_to(alice, 1.0)
    assert (absence.mode, addr) == (m.BR_ABSENCE, LAN_BROADCAST)
    assert m.read_entry(absence.extra, "utf-8").nick == "alice2"
    alice.close()
    exits = sent_to(alice, 2.0)
    assert {addr for _, addr in exits} == {LAN_BROADCAST, TUX}
    assert all(p.mode == m.BR_EXIT for p, _ in exits)


def test_a_flood_of_entries_keeps_one_user_per_ip_and_the_table_bounded() -> None:
    alice = chat(max_peers=16, unknown_rate=1e9, unknown_burst=1e9)
    for port in range(1000, 1100):  # one host, a hundred ports
        alice.receive_datagram(iptux_entry(port), ("10.77.0.50", port), 0.0)
    for host in range(1, 200):  # two hundred hosts
        alice.receive_datagram(iptux_entry(host), (f"10.78.0.{host}", 2425), 0.0)
    ipmsg_rows = [p for p in alice.peers(0.0) if p.dialect == "ipmsg"]
    assert len(ipmsg_rows) == 16
    assert sum(p.peer[0] == "10.77.0.50" for p in alice.peers(0.0)) <= 1


# -- messages in ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "body", "text", "encoding"),
    [
        (
            m.SENDMSG | m.SENDCHECKOPT | m.UTF8OPT,
            "你好 from IPMsg\0".encode(),
            "你好 from IPMsg",
            "utf-8",
        ),
        (m.SENDMSG | m.SENDCHECKOPT, "你好，飞秋\0".encode("gbk"), "你好，飞秋", "gb18030"),
        (m.SENDMSG | m.SENDCHECKOPT, b"line 1\r\nline 2\0", "line 1\nline 2", "gb18030"),
    ],
    ids=["utf8opt", "gbk", "crlf"],
)
def test_a_message_is_shown_once_in_its_encoding_and_answered_with_recvmsg(
    command: int, body: bytes, text: str, encoding: str
) -> None:
    alice = chat()
    joined(alice, packet(1, m.BR_ENTRY, b"feiq\0", version=FEIQ_VERSION), FEIQ)
    alice.receive_datagram(packet(200, command, body, version=FEIQ_VERSION), FEIQ, 1.0)
    assert events_of(alice) == [
        MessageReceived(
            peer=FEIQ,
            nick="feiq",
            text=text,
            sent_at_ms=int((WALL + 1.0) * 1000),
            dialect="ipmsg",
            encoding=encoding,
        )
    ]
    ((answer, addr),) = sent_to(alice, 1.0)
    assert (answer.mode, answer.extra, addr) == (m.RECVMSG, b"200", FEIQ)


def test_a_retransmitted_message_is_answered_again_but_shown_once_and_a_late_one_is_shown() -> None:
    alice = chat()
    joined(alice, iptux_entry())
    command = m.SENDMSG | m.SENDCHECKOPT
    shown = []
    for number, text in [(10, b"one"), (12, b"three"), (10, b"one"), (11, b"two")]:
        alice.receive_datagram(packet(number, command, text), TUX, 1.0)
        events, out = drain(alice, 1.0)
        shown += [e.text for e in events if isinstance(e, MessageReceived)]
        assert [p.extra for p in out] == [str(number).encode()]  # every copy answered
    assert shown == ["one", "three", "two"]


@pytest.mark.parametrize("option", [m.BROADCASTOPT, m.AUTORETOPT])
def test_broadcast_and_auto_replies_are_shown_but_never_answered(option: int) -> None:
    alice = chat()
    joined(alice, iptux_entry())
    alice.receive_datagram(packet(30, m.SENDMSG | m.SENDCHECKOPT | option, b"away"), TUX, 1.0)
    events, out = drain(alice, 1.0)
    assert [e.text for e in events if isinstance(e, MessageReceived)] == ["away"]
    assert out == []


def test_a_message_before_any_entry_makes_its_sender_a_peer() -> None:
    alice = chat()
    drain(alice)
    alice.receive_datagram(packet(40, m.SENDMSG | m.SENDCHECKOPT, b"hi"), TUX, 1.0)
    events, out = drain(alice, 1.0)
    assert [type(e) for e in events] == [PeerJoined, MessageReceived]
    assert [p.mode for p in out] == [m.RECVMSG]


def test_a_file_offer_is_shown_not_dropped() -> None:
    alice = chat()
    joined(alice, iptux_entry())
    files = b"0:report::v2.pdf:1f400:5f000000:1:\a1:photo.jpg:400:5f000000:1:"
    command = m.SENDMSG | m.SENDCHECKOPT | m.FILEATTACHOPT
    alice.receive_datagram(packet(50, command, b"see attached\0" + files), TUX, 1.0)
    events, _ = drain(alice, 1.0)
    assert events[1:] == [
        FileOffered(peer=TUX, nick="tux", name="report:v2.pdf", size=0x1F400),
        FileOffered(peer=TUX, nick="tux", name="photo.jpg", size=0x400),
    ]


@pytest.mark.parametrize(
    "data",
    [
        b"1:12x:root:vm:32:hi",  # a packet number that is not a number
        b"1:1:root:vm:99999999999:hi",  # a command beyond 32 bits
        b"1:1:" + b"u" * 300 + b":vm:32:hi",  # an over-long field
        b"1_iptux:5:root:vm:33:not-a-number",  # RECVMSG of no packet number
    ],
    ids=["number", "command", "long-field", "recvmsg"],
)
def test_malformed_ipmsg_is_dropped_and_counted(data: bytes) -> None:
    alice = chat()
    joined(alice, iptux_entry())
    alice.receive_datagram(data, TUX, 1.0)
    events, out = drain(alice, 1.0)
    assert [type(e) for e in events] == [DatagramRejected] and out == []
    assert alice.stats().malformed_dropped == 1


def test_bad_bytes_in_a_message_are_shown_escaped_not_raised() -> None:
    alice = chat()
    joined(alice, iptux_entry())
    alice.receive_datagram(packet(60, m.SENDMSG | m.UTF8OPT, b"ok \xff\xfe"), TUX, 1.0)
    events, _ = drain(alice, 1.0)
    assert [e.text for e in events if isinstance(e, MessageReceived)] == ["ok \\xff\\xfe"]


def test_without_ipmsg_its_packets_are_foreign() -> None:
    session = ChatSession("alice", config=Config(), wall_offset=WALL)
    session.receive_datagram(iptux_entry(), TUX, 0.0)
    events, out = drain(session)
    assert out == [] and session.stats().foreign_dropped == 1
    assert not any(isinstance(e, PeerJoined) for e in events)


# -- messages out ---------------------------------------------------------------------


def test_a_message_goes_as_sendmsg_until_recvmsg_then_it_is_delivered() -> None:
    alice = chat()
    joined(alice, packet(1, m.BR_ENTRY | m.CAPUTF8OPT, b"xh\0", version=b"1"), FEIQ)
    message_id = alice.send_message("你好", 1.0, sent_at_ms=0, to=[FEIQ])
    ((first, addr),) = sent_to(alice, 1.0)
    assert addr == FEIQ
    assert (first.mode, first.options) == (m.SENDMSG, m.SENDCHECKOPT | m.UTF8OPT)
    assert first.extra == "你好".encode()
    assert alice.pending() == 1
    # Lost: sent again with the same number, 0.5 s later, then 1 s after that.
    assert alice.get_timer() == 1.5
    alice.handle_timer(1.5)
    ((again, _),) = sent_to(alice, 1.5)
    assert again.number == first.number and alice.get_timer() == 2.5
    alice.receive_datagram(packet(2, m.RECVMSG, str(first.number).encode()), FEIQ, 1.6)
    events, _ = drain(alice, 1.6)
    (delivered,) = events
    assert isinstance(delivered, MessageDelivered)
    assert (delivered.message_id, delivered.peer) == (message_id, FEIQ)
    assert delivered.elapsed == pytest.approx(0.6)
    assert alice.pending() == 0


def test_to_a_peer_without_utf8_the_text_goes_in_its_encoding() -> None:
    alice = chat()
    joined(alice, packet(1, m.BR_ENTRY, b"feiq\0", version=FEIQ_VERSION), FEIQ)
    alice.send_message("你好\nworld", 1.0, sent_at_ms=0, to=[FEIQ])
    ((sent, _),) = sent_to(alice, 1.0)
    assert not sent.options & m.UTF8OPT
    assert sent.extra == "你好\r\nworld".encode("gb18030")


def test_messages_to_one_user_go_one_at_a_time_with_increasing_numbers() -> None:
    alice = chat()
    joined(alice, iptux_entry())
    ids = [alice.send_message(f"m{i}", 1.0, sent_at_ms=0, to=[TUX]) for i in range(3)]
    ((first, _),) = sent_to(alice, 1.0)
    assert first.extra == b"m0"
    numbers = [first.number]
    delivered = []
    for step in range(3):
        now = 1.1 + step
        alice.receive_datagram(packet(10 + step, m.RECVMSG, str(numbers[-1]).encode()), TUX, now)
        events, out = drain(alice, now)
        delivered += [e.message_id for e in events if isinstance(e, MessageDelivered)]
        numbers += [p.number for p in out if p.mode == m.SENDMSG]
    assert delivered == ids
    assert numbers == sorted(set(numbers)) and len(numbers) == 3


def test_an_unanswered_message_fails_after_give_up_with_those_queued_behind_it() -> None:
    alice = chat(give_up_after=30.0)
    joined(alice, iptux_entry())
    first = alice.send_message("lost", 1.0, sent_at_ms=0, to=[TUX])
    second = alice.send_message("queued", 20.0, sent_at_ms=0, to=[TUX])
    sends, now = 0, 1.0
    failed: list[DeliveryFailed] = []
    while not failed:
        events, out = drain(alice, now)
        sends += sum(p.mode == m.SENDMSG for p in out)
        failed = [e for e in events if isinstance(e, DeliveryFailed)]
        timer = alice.get_timer()
        if timer is None:
            break
        now = timer
        alice.handle_timer(now)
        events, out = drain(alice, now)
        sends += sum(p.mode == m.SENDMSG for p in out)
        failed = [e for e in events if isinstance(e, DeliveryFailed)]
    assert [(e.message_id, e.elapsed) for e in failed] == [(first, 30.0), (second, 11.0)]
    assert 10 <= sends <= 20  # 0.5, 1, 2, 2, 2 ... s apart for 30 s
    assert alice.pending() == 0 and alice.get_timer() is None


def test_messages_queued_behind_a_slow_one_do_not_fail_while_it_gets_through() -> None:
    alice = chat(give_up_after=30.0)
    joined(alice, iptux_entry())
    ids = [alice.send_message(f"m{i}", 0.0, sent_at_ms=0, to=[TUX]) for i in range(3)]
    delivered: list[int] = []
    out = sent_to(alice, 0.0)
    for step in range(3):  # each answered after 20 s: 60 s for the three
        (sent,) = [p for p, _ in out if p.mode == m.SENDMSG]
        now = 20.0 * step + 20.0
        alice.handle_timer(now - 0.01)
        sent_to(alice, now - 0.01)  # a retransmission
        alice.receive_datagram(packet(100 + step, m.RECVMSG, str(sent.number).encode()), TUX, now)
        out = sent_to(alice, now)
        events = events_of(alice)
        delivered += [e.message_id for e in events if isinstance(e, MessageDelivered)]
        assert not any(isinstance(e, DeliveryFailed) for e in events)
    assert delivered == ids


def test_a_new_nickname_waits_while_a_message_is_in_flight() -> None:
    alice = chat(ipmsg_broadcast=(LAN_BROADCAST,))
    joined(alice, iptux_entry())
    alice.send_message("hi", 1.0, sent_at_ms=0, to=[TUX])
    ((message, _),) = sent_to(alice, 1.0)
    alice.set_nick("alice2")
    assert sent_to(alice, 1.1) == []
    alice.receive_datagram(packet(9, m.RECVMSG, str(message.number).encode()), TUX, 1.2)
    assert [p.mode for p, _ in sent_to(alice, 1.2)] == [m.BR_ABSENCE]


def test_pending_messages_fail_when_the_user_exits() -> None:
    alice = chat()
    joined(alice, iptux_entry())
    alice.send_message("bye?", 1.0, sent_at_ms=0, to=[TUX])
    drain(alice, 1.0)
    alice.receive_datagram(packet(7, m.BR_EXIT, b"tux\0"), TUX, 2.0)
    events, _ = drain(alice, 2.0)
    assert [type(e) for e in events] == [PeerLeft, DeliveryFailed]
    assert alice.pending() == 0


def test_two_udpchats_with_ipmsg_ignore_each_others_entries() -> None:
    alice = chat("alice", ipmsg_broadcast=(LAN_BROADCAST,))
    bob = chat("bob", ipmsg_broadcast=(LAN_BROADCAST,))
    drain(alice)
    for data, _ in bob.datagrams_to_send(0.0):
        alice.receive_datagram(data, ("10.77.0.4", 2425), 0.0)
    events, out = drain(alice)
    assert events == [] and out == []
