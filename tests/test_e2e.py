"""End to end over real UDP sockets on 127.0.0.1, for every model."""

from __future__ import annotations

import multiprocessing
import socket
import threading

import pytest
from conftest import OpenRuntime, collect_messages, recorded, wait_for
from relay import Faults, LossyRelay

from udpchat.protocol import (
    Config,
    DatagramRejected,
    DeliveryFailed,
    LeaveReason,
    MessageDelivered,
    MessageReceived,
    NoPeers,
    PeerJoined,
    PeerLeft,
    RawMessageSent,
    RejectReason,
    SendFailed,
    ipmsg,
    wire,
)
from udpchat.protocol.crypto import derive_master_key
from udpchat.runtimes import create_runtime

MESSAGES = 1000
TIMEOUT = 10.0


def _exchange(a_send, b_send, a, b) -> None:  # type: ignore[no-untyped-def]
    """Both sides send MESSAGES messages at once; each must get the other's, in order."""
    sent_by_a = [f"a{i} 你好" for i in range(MESSAGES)]
    sent_by_b = [f"b{i} 🙂" for i in range(MESSAGES)]
    sender = threading.Thread(target=lambda: [a_send(t) for t in sent_by_a])
    sender.start()
    for text in sent_by_b:
        b_send(text)
    sender.join(timeout=30)
    assert collect_messages(b, MESSAGES) == sent_by_a
    assert collect_messages(a, MESSAGES) == sent_by_b
    assert a.wait_delivered(timeout=60) and b.wait_delivered(timeout=60)


def test_thousand_messages_each_way_arrive_once_and_in_order(
    model: str, open_runtime: OpenRuntime
) -> None:
    a = open_runtime(model, "alice")
    b = open_runtime(model, "bob", peers=(a.local_address,))
    wait_for(a, lambda e: isinstance(e, PeerJoined) and e.nick == "bob")
    _exchange(a.send, b.send, a, b)
    for runtime in (a, b):
        stats = runtime.stats()
        assert stats.messages_delivered == MESSAGES
        assert stats.messages_received == MESSAGES
        assert stats.messages_failed == 0


@pytest.mark.parametrize("seed", [1, 2])
def test_lossy_relay_loses_nothing_duplicates_nothing_and_keeps_order(
    model: str, open_runtime: OpenRuntime, seed: int
) -> None:
    faults = Faults(loss=0.30, duplicate=0.10, reorder=0.25)
    with LossyRelay(faults, seed=seed) as relay:
        a = open_runtime(model, "alice")
        b = open_runtime(model, "bob")
        relay.connect(a.local_address, b.local_address)
        a.add_peer(relay.address_for_a)
        b.add_peer(relay.address_for_b)
        _exchange(a.send, b.send, a, b)
        stats = [a.stats(), b.stats()]
    for side in stats:
        assert side.messages_delivered == MESSAGES
        assert side.messages_received == MESSAGES
        assert side.messages_failed == 0
    total = stats[0] + stats[1]
    assert relay.counts.dropped > 0 and relay.counts.duplicated > 0 and relay.counts.delayed > 0
    assert total.retransmissions > 0 and total.duplicates_dropped > 0
    print(
        f"\n[{model} seed {seed}] relay: {relay.counts}; sent {2 * MESSAGES} messages,"
        f" delivered {total.messages_delivered}, received {total.messages_received},"
        f" DATA {total.data_sent}, retransmitted {total.retransmissions},"
        f" duplicates suppressed {total.duplicates_dropped}, ACKs sent {total.acks_sent}"
    )


def test_peer_that_closes_is_reported_as_left(model: str, open_runtime: OpenRuntime) -> None:
    a = open_runtime(model, "alice")
    b = open_runtime(model, "bob", peers=(a.local_address,))
    wait_for(a, lambda e: isinstance(e, PeerJoined))
    b.close()
    left = wait_for(a, lambda e: isinstance(e, PeerLeft))
    assert isinstance(left, PeerLeft) and left.reason is LeaveReason.BYE and left.nick == "bob"


def test_message_to_a_silent_peer_fails_after_the_give_up_time(
    model: str, open_runtime: OpenRuntime
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.settimeout(TIMEOUT)
        a = open_runtime(
            model, "alice", peers=(silent.getsockname(),), config=Config(give_up_after=0.5)
        )
        # It answers Alice's first HELLO (a peer is sent DATA only once it has answered),
        # then never again.
        _, alice = silent.recvfrom(2048)
        silent.sendto(wire.encode(wire.Hello(b"silent!!", "mute", rooms=("lobby",))), alice)
        wait_for(a, lambda e: isinstance(e, PeerJoined))
        message_id = a.send("anyone?")
        failed = wait_for(a, lambda e: isinstance(e, DeliveryFailed))
    assert isinstance(failed, DeliveryFailed) and failed.message_id == message_id
    assert failed.elapsed >= 0.5
    assert a.stats().retransmissions >= 1
    assert a.pending() == 0


def test_sending_with_no_peer_is_refused(model: str, open_runtime: OpenRuntime) -> None:
    a = open_runtime(model, "alice")
    with pytest.raises(NoPeers):
        a.send("hello?")


def test_send_to_no_known_peer_is_refused_at_once_in_every_model(
    model: str, open_runtime: OpenRuntime
) -> None:
    bob = open_runtime(model, "bob")
    alice = open_runtime(model, "alice", peers=(bob.local_address,))
    stranger = ("127.0.0.1", 9)  # never sent to: the message is refused first
    with pytest.raises(NoPeers):
        alice.send("for a stranger", to=[stranger])
    with pytest.raises(NoPeers):
        alice.send("for nobody", to=[])
    message_id = alice.send("for bob", to=[stranger, bob.local_address])
    # The refused messages report nothing: the first delivery event is this one's.
    outcome = wait_for(alice, lambda e: isinstance(e, (MessageDelivered, DeliveryFailed)))
    assert isinstance(outcome, MessageDelivered) and outcome.message_id == message_id
    assert collect_messages(bob, 1) == ["for bob"]
    assert alice.pending() == 0


@pytest.mark.parametrize(
    ("payload", "text", "encoding"),
    [
        (b"hello from netcat\n", "hello from netcat", "utf-8"),
        ("你好".encode("gbk"), "你好", "gb18030"),
    ],
)
def test_a_plain_udp_tool_is_a_raw_peer_answered_in_its_encoding(
    model: str, open_runtime: OpenRuntime, payload: bytes, text: str, encoding: str
) -> None:
    a = open_runtime(model, "alice")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tool:
        tool.bind(("127.0.0.1", 0))
        tool.settimeout(10)
        tool.sendto(payload, a.local_address)
        got = wait_for(a, lambda e: isinstance(e, MessageReceived))
        assert isinstance(got, MessageReceived)
        assert (got.text, got.dialect, got.encoding) == (text, "raw", encoding)
        assert got.peer == tool.getsockname()
        message_id = a.send("收到 ok", to=[got.peer])
        data, source = tool.recvfrom(2048)
        assert data == "收到 ok\n".encode(encoding) and source == a.local_address
        sent = wait_for(a, lambda e: isinstance(e, RawMessageSent))
        assert sent == RawMessageSent(message_id=message_id, peer=got.peer, encoding=encoding)
    assert a.pending() == 0 and a.stats().raw_received == 1


def test_an_ipmsg_client_joins_and_chats_both_ways_with_acknowledgements(
    model: str, open_runtime: OpenRuntime
) -> None:
    """A socket plays an IPMsg client packet by packet (FeiQ-like: GBK, no UTF-8)."""
    a = open_runtime(model, "alice", config=Config(ipmsg=True))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        client.settimeout(10)

        def send(number: int, command: int, extra: bytes) -> None:
            packet = ipmsg.Packet(b"1_lbt6_0#128#MAC", number, b"xh", b"pc", command, extra)
            client.sendto(ipmsg.encode(packet), a.local_address)

        def receive(mode: int) -> ipmsg.Packet:
            while True:
                data, source = client.recvfrom(65535)
                assert source == a.local_address
                packet = ipmsg.decode(data)
                if packet.mode == mode:
                    return packet

        send(1, ipmsg.BR_ENTRY, "小红\0研发部\0".encode("gbk"))
        assert receive(ipmsg.ANSENTRY).options & ipmsg.CAPUTF8OPT
        joined = wait_for(a, lambda e: isinstance(e, PeerJoined))
        assert isinstance(joined, PeerJoined)
        assert (joined.nick, joined.dialect, joined.group) == ("小红", "ipmsg", "研发部")
        send(2, ipmsg.SENDMSG | ipmsg.SENDCHECKOPT, "你好\0".encode("gbk"))
        assert receive(ipmsg.RECVMSG).extra == b"2"
        got = wait_for(a, lambda e: isinstance(e, MessageReceived))
        assert isinstance(got, MessageReceived)
        assert (got.text, got.dialect, got.encoding) == ("你好", "ipmsg", "gb18030")
        message_id = a.send("收到", to=[got.peer])
        message = receive(ipmsg.SENDMSG)
        assert message.options == ipmsg.SENDCHECKOPT and message.extra == "收到".encode("gbk")
        send(3, ipmsg.RECVMSG, str(message.number).encode())
        done = wait_for(a, lambda e: isinstance(e, (MessageDelivered, DeliveryFailed)))
        assert isinstance(done, MessageDelivered) and done.message_id == message_id
    assert a.pending() == 0


def test_in_shared_key_mode_a_plain_udp_tool_is_dropped_with_a_preview(
    model: str, open_runtime: OpenRuntime
) -> None:
    a = open_runtime(model, "alice", config=Config(key=derive_master_key(b"no raw")))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tool:
        tool.sendto("你好".encode("gbk"), a.local_address)
        rejected = wait_for(a, lambda e: isinstance(e, DatagramRejected))
    assert isinstance(rejected, DatagramRejected)
    assert rejected.reason is RejectReason.NOT_UDPCHAT and rejected.preview == "你好"
    assert a.stats().foreign_dropped == 1


def test_a_send_the_kernel_refuses_is_reported_at_once(
    model: str, open_runtime: OpenRuntime
) -> None:
    # The broadcast address of 127/8: the kernel refuses it (EACCES, no SO_BROADCAST)
    # before anything leaves the machine.
    broadcast = ("127.255.255.255", 9)
    alice = open_runtime(model, "alice", peers=(broadcast,), config=Config(give_up_after=60))
    refused = wait_for(alice, lambda e: isinstance(e, SendFailed))  # the first HELLO
    assert refused == SendFailed(peer=broadcast, reason="Permission denied", count=1)
    assert alice.stats().messages_failed == 0  # reported long before any give-up


def test_nick_change_reaches_the_peer(model: str, open_runtime: OpenRuntime) -> None:
    a = open_runtime(model, "alice")
    b = open_runtime(model, "bob", peers=(a.local_address,))
    wait_for(a, lambda e: isinstance(e, PeerJoined))
    wait_for(b, lambda e: isinstance(e, PeerJoined))
    b.set_nick("robert")
    b.send("it is me")
    message = wait_for(a, lambda e: isinstance(e, MessageReceived))
    assert isinstance(message, MessageReceived) and message.nick == "robert"


def _udpchat_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("udpchat")]


def test_close_frees_the_port_and_ends_every_worker(model: str, open_runtime: OpenRuntime) -> None:
    a = open_runtime(model, "alice")
    address = a.local_address
    # Every model runs at least one thread of its own (the process model's reads its
    # children's pipes), and the process model two children.
    assert _udpchat_threads()
    assert len(multiprocessing.active_children()) == (2 if model == "process" else 0)
    a.close()
    assert _udpchat_threads() == []  # so nothing is left that could call on_event
    assert multiprocessing.active_children() == []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(address)  # the socket is closed in every process: the port is free


def test_send_before_open_or_after_close_is_an_error(model: str) -> None:
    runtime = recorded(create_runtime, model, "alice", bind="127.0.0.1", peers=[("127.0.0.1", 9)])
    with pytest.raises(RuntimeError):
        runtime.send("too early")
    runtime.open()
    runtime.close()
    with pytest.raises(RuntimeError):
        runtime.send("too late")


def test_close_wakes_a_caller_waiting_for_delivery(model: str, open_runtime: OpenRuntime) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        alice = open_runtime(model, "alice", peers=(silent.getsockname(),))
        alice.send("nobody will acknowledge this")
        result: list[bool] = []
        waiter = threading.Thread(target=lambda: result.append(alice.wait_delivered(60)))
        waiter.start()
        alice.close()
        waiter.join(timeout=10)  # not 60: close() must wake it
    assert not waiter.is_alive() and result == [False]


def test_a_message_shown_is_acknowledged_even_if_the_receiver_closes_at_once(
    model: str,
) -> None:
    """Events reach the caller only after the ACKs made with them are on the wire."""
    for _ in range(20):
        with recorded(create_runtime, model, "bob", bind="127.0.0.1") as bob:
            alice = recorded(
                create_runtime, model, "alice", bind="127.0.0.1", peers=[bob.local_address]
            )
            with alice:
                message_id = alice.send("goodbye")
                wait_for(bob, lambda e: isinstance(e, MessageReceived))
                bob.close()  # at once, as a user quitting right after reading
                outcome = wait_for(
                    alice, lambda e: isinstance(e, (MessageDelivered, DeliveryFailed))
                )
        assert isinstance(outcome, MessageDelivered) and outcome.message_id == message_id


def test_send_to_one_peer_reaches_only_that_peer(model: str, open_runtime: OpenRuntime) -> None:
    bob = open_runtime(model, "bob")
    carol = open_runtime(model, "carol")
    alice = open_runtime(model, "alice", peers=(bob.local_address, carol.local_address))
    alice.send("only for bob", to=[bob.local_address])
    alice.send("for everyone")
    assert collect_messages(bob, 2) == ["only for bob", "for everyone"]
    assert collect_messages(carol, 1) == ["for everyone"]
    assert alice.wait_delivered(timeout=10) and alice.stats().messages_delivered == 3
