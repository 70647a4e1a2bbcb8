"""A peer is its session, not its address: the same peer under two addresses, a peer
removed and added again, a restarted peer, and a peer that says BYE, on the virtual
clock (docs/protocol.md, "Receiving" and "BYE")."""

from __future__ import annotations

import socket

import pytest
from conftest import OpenRuntime, wait_for
from memnet import ALICE, ALICE_SESSION, BOB, BOB_SESSION, MemNet, Sent, pair

from udpchat.protocol import ChatSession, Config
from udpchat.protocol.errors import RejectReason
from udpchat.protocol.events import (
    Address,
    DatagramRejected,
    DeliveryFailed,
    LeaveReason,
    MessageDelivered,
    MessageReceived,
    PeerJoined,
    PeerLeft,
)
from udpchat.protocol.wire import Ack, Bye, Data, Hello, decode, encode

# Two chats on one machine that has a LAN address: each can be reached at both.
A_LAN: Address = ("10.0.0.1", 9000)
A_LO: Address = ("127.0.0.1", 9000)
B_LAN: Address = ("10.0.0.1", 9001)
B_LO: Address = ("127.0.0.1", 9001)


KEYED = Config(key=bytes(range(32)))
MODES = pytest.mark.parametrize("config", [None, KEYED], ids=["plain", "shared-key"])


def two_homed(alice_names: Address, bob_names: Address, config: Config | None = None) -> MemNet:
    """Alice and Bob, each reachable at a loopback and a LAN address, each naming the other
    by the address given. A datagram to a loopback address leaves from the sender's
    loopback address, as the kernel chooses it."""
    net = MemNet()
    net.attach(A_LAN, ChatSession("alice", session_id=ALICE_SESSION, config=config))
    net.attach(B_LAN, ChatSession("bob", session_id=BOB_SESSION, config=config))
    net.also_at = {A_LO: A_LAN, B_LO: B_LAN}
    net.routes = {(A_LAN, B_LO): A_LO, (B_LAN, A_LO): B_LO}
    net.add_peer(A_LAN, alice_names)
    net.add_peer(B_LAN, bob_names)
    return net


@MODES
@pytest.mark.parametrize(
    ("alice_names", "bob_names"),
    [(B_LO, A_LAN), (B_LAN, A_LO), (B_LO, A_LO), (B_LAN, A_LAN)],
    ids=["lo-lan", "lan-lo", "lo-lo", "lan-lan"],
)
def test_a_peer_heard_from_two_addresses_is_one_peer(
    alice_names: Address, bob_names: Address, config: Config | None
) -> None:
    net = two_homed(alice_names, bob_names, config)
    net.run_for(3)
    sent = [net.send(A_LAN, f"a{i}") for i in range(3)]
    for i in range(2):
        net.send(B_LAN, f"b{i}")
    net.run_until_settled()
    net.run_for(1)
    assert net.texts(B_LAN) == ["a0", "a1", "a2"]
    assert net.texts(A_LAN) == ["b0", "b1"]
    for me in (A_LAN, B_LAN):
        assert len(net.events(me, PeerJoined)) == 1
        assert net.events(me, DeliveryFailed) == []
        assert net.events(me, PeerLeft) == []
        (row,) = net.session(me).peers(net.now)
        assert row.present
    assert sorted(e.message_id for e in net.events(A_LAN, MessageDelivered)) == sent


def test_replies_go_to_the_address_a_peer_was_last_heard_from() -> None:
    net = two_homed(B_LO, A_LAN)
    net.run_for(3)
    start = len(net.sent)
    net.send(A_LAN, "hi")
    net.run_until_settled()
    # Bob was last heard from at his loopback address (he answers Alice's datagrams to it).
    last_from_bob = [s.src for s in net.arrived if s.dst in (A_LAN, A_LO)][-1]
    data_to_bob = {s.dst for s in net.sent[start:] if s.src in (A_LAN, A_LO)}
    assert data_to_bob == {last_from_bob}


def learned_pair(config: Config | None = None) -> MemNet:
    """Alice is told of Bob; Bob learns of Alice from her HELLO (started without --peer)."""
    net = MemNet()
    net.attach(ALICE, ChatSession("alice", session_id=ALICE_SESSION, config=config))
    net.attach(BOB, ChatSession("bob", session_id=BOB_SESSION, config=config))
    net.add_peer(ALICE, BOB)
    net.run_for(1)
    return net


def test_a_peer_removed_and_added_again_is_a_peer_again() -> None:
    net = learned_pair()
    net.session(ALICE).remove_peer(BOB, net.now)
    net.flush(ALICE)
    net.run_for(1)
    assert net.events(BOB, PeerLeft) == [PeerLeft(peer=ALICE, nick="alice", reason=LeaveReason.BYE)]
    assert net.session(ALICE).sender.active_peers() == 0
    net.add_peer(ALICE, BOB)
    net.run_for(1)
    assert len(net.events(BOB, PeerJoined)) == 2
    message_id = net.send(ALICE, "back again")
    net.run_until_settled()
    assert net.texts(BOB) == ["back again"]
    assert [e.message_id for e in net.events(ALICE, MessageDelivered)] == [message_id]
    (row,) = net.session(ALICE).peers(net.now)
    assert row.present and row.configured
    assert net.session(ALICE).sender.active_peers() == 1


@MODES
def test_a_restarted_peer_that_knows_nobody_learns_of_us_with_our_next_datagram(
    config: Config | None,
) -> None:
    net = learned_pair(config)
    net.detach(BOB)
    restarted_at = net.now
    net.attach(BOB, ChatSession("bob", session_id=b"bob-new!", config=config))
    # Alice's next datagram to Bob is her keep-alive PING, at most 15 s away.
    net.run_until(restarted_at + 15.1)
    (joined,) = [e for e in net.events(ALICE, PeerJoined) if e.restarted]
    first = min(s.time for s in net.arrived if s.dst == BOB and s.time > restarted_at)
    (recognised_at,) = [
        t
        for t, e in zip(net.times(ALICE, PeerJoined), net.events(ALICE, PeerJoined), strict=True)
        if e.restarted
    ]
    # One hop after that PING: Bob's PONG shows Alice the new session. With a key, Bob
    # cannot open a PING sealed for his old session: his refusal makes Alice greet
    # whoever is there with a HELLO sealed for anyone, and the PING by which Bob checks
    # that HELLO, sealed for Alice, shows her the new session: three hops.
    hops = 1 if config is None else 3
    assert recognised_at == pytest.approx(first + hops * net.latency)
    assert joined.peer == BOB
    assert net.session(BOB).sender.active_peers() == 1
    net.send(BOB, "I'm back")
    net.run_until_settled()
    assert net.texts(ALICE) == ["I'm back"]
    assert net.events(ALICE, PeerLeft) == []


def test_messages_waiting_for_a_peer_that_says_bye_fail_at_once() -> None:
    net = pair()
    net.run_for(1)
    net.cut(ALICE, BOB, both_ways=False)  # Alice's DATA never arrives
    message_id = net.send(ALICE, "too late")
    net.run_for(0.5)
    net.close(BOB)
    net.run_for(0.1)
    (failed,) = net.events(ALICE, DeliveryFailed)
    assert failed.message_id == message_id
    assert failed.reason == "bob left"
    assert failed.elapsed == pytest.approx(0.51)


def test_a_bye_acknowledges_what_a_lost_last_ack_did_not() -> None:
    net = pair()
    net.run_for(1)

    def lose_acks_to_alice(sent: Sent) -> bool:
        return sent.dst == ALICE and type(sent.record) is Ack

    net.drop_if = lose_acks_to_alice
    message_id = net.send(ALICE, "arrives, unacknowledged")
    net.run_for(0.02)
    assert net.texts(BOB) == ["arrives, unacknowledged"]
    net.close(BOB)
    (bye,) = [s.record for s in net.sent if s.src == BOB and type(s.record) is Bye]
    assert bye == Bye(BOB_SESSION, ALICE_SESSION, 1, 0)
    net.run_for(0.1)
    assert [e.message_id for e in net.events(ALICE, MessageDelivered)] == [message_id]
    assert net.events(ALICE, DeliveryFailed) == []


def test_a_bye_without_anything_received_is_bare() -> None:
    alice = ChatSession("alice", session_id=ALICE_SESSION)
    alice.add_peer(BOB, 0.0)
    alice.datagrams_to_send(0.0)
    alice.close()
    assert [decode(d) for d, _ in alice.datagrams_to_send(0.0)] == [Bye(ALICE_SESSION)]


def test_our_own_datagram_sent_back_to_us_is_dropped() -> None:
    alice = ChatSession("alice", session_id=ALICE_SESSION)
    reflected = encode(Hello(ALICE_SESSION, "alice", wants_reply=True))
    alice.receive_datagram(reflected, BOB, 0.0)
    assert alice.datagrams_to_send(0.0) == []
    events = []
    while (event := alice.next_event()) is not None:
        events.append(event)
    assert [type(e) for e in events] == [DatagramRejected]
    assert isinstance(events[0], DatagramRejected)
    assert events[0].reason is RejectReason.OWN_SESSION
    assert alice.peers(0.0) == []
    assert alice.stats().malformed_dropped == 1


# -- every model, on real sockets ----------------------------------------------------------


def test_every_model_acknowledges_in_its_bye_what_it_received(
    model: str, open_runtime: OpenRuntime
) -> None:
    """A peer (a bare socket here) that never reads ACKs still learns, from the BYE, what
    was received: in the process model, the receiving process hands it over first."""
    fake = b"fakepeer"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(10.0)
        bob = open_runtime(model, "bob", peers=(peer.getsockname(),))
        _, bob_at = peer.recvfrom(2048)  # Bob's HELLO
        peer.sendto(encode(Hello(fake, "fake")), bob_at)
        wait_for(bob, lambda e: isinstance(e, PeerJoined))
        peer.sendto(encode(Data(fake, 0, 0, 0, 1, b"hi", 1, "fake")), bob_at)
        wait_for(bob, lambda e: isinstance(e, MessageReceived) and e.text == "hi")
        bob.close()
        while not isinstance(record := decode(peer.recvfrom(2048)[0]), Bye):
            pass
    assert record == Bye(record.session, fake, 1, 0)
