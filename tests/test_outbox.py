"""The core's side of durable chat (docs/protocol.md, "The offline outbox" and
"Restarts"): message keys shown once, direct messages held for a peer that is away, and
a peer that restarts mid-stream getting again what it had only acknowledged
selectively. All on the in-memory network, with virtual time."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
from memnet import ALICE, ALICE_SESSION, BOB, BOB_SESSION, EPOCH_MS, MemNet

from udpchat.protocol import (
    ChatSession,
    Config,
    DeliveryFailed,
    MessageDelivered,
    MessageHeld,
    MessageReceived,
    Outboxed,
    OutboxFull,
    PeerLeft,
    wire,
)

ALICE_INSTANCE = b"\xaa" * 8
BOB_INSTANCE = b"\xbb" * 8


def alice(session: bytes = ALICE_SESSION, **config: Any) -> ChatSession:
    return ChatSession(
        "alice",
        session_id=session,
        config=Config(instance=ALICE_INSTANCE, **config),
        wall_offset=EPOCH_MS / 1000,  # the virtual wall clock of `MemNet.send`
    )


def bob(session: bytes = BOB_SESSION, **config: Any) -> ChatSession:
    return ChatSession("bob", session_id=session, config=Config(instance=BOB_INSTANCE, **config))


def chatting(net: MemNet, **config: Any) -> MemNet:
    """Alice and Bob, each naming the other, having met."""
    net.attach(ALICE, alice(**config))
    net.attach(BOB, bob(**config))
    net.add_peer(ALICE, BOB)
    net.add_peer(BOB, ALICE)
    net.run_for(1)
    return net


def bob_returns(net: MemNet, session: bytes = b"bob-s002") -> None:
    """Bob starts again at his address: a new session of the same installation."""
    net.attach(BOB, bob(session))
    net.add_peer(BOB, ALICE)


def direct(net: MemNet, text: str) -> int:
    return net.send(ALICE, text, to=[BOB])


def test_a_message_key_travels_in_the_first_fragment_and_is_the_senders() -> None:
    net = chatting(MemNet())
    direct(net, "hi")
    net.run_until_settled()
    (received,) = net.events(BOB, MessageReceived)
    assert len(received.key) == wire.KEY_BYTES
    assert received.key[:8] == ALICE_INSTANCE


def test_a_message_sent_again_under_its_key_is_acknowledged_and_shown_once() -> None:
    """A restarted sender sends what its outbox kept, under the same key: the receiver
    that showed it already acknowledges it, and shows nothing."""
    net = chatting(MemNet())
    direct(net, "once")
    net.run_until_settled()
    (shown,) = net.events(BOB, MessageReceived)
    net.detach(ALICE)
    net.attach(ALICE, alice(b"alice-s2"))
    net.add_peer(ALICE, BOB)
    outboxed = Outboxed(BOB_INSTANCE, "bob", EPOCH_MS + 3_600_000)
    again = net.session(ALICE).send_message(
        "once", net.now, sent_at_ms=EPOCH_MS, key=shown.key, outboxed=outboxed
    )
    net.flush(ALICE)
    net.run_until_settled()
    assert net.texts(BOB) == ["once"]
    assert net.session(BOB).stats().messages_repeated == 1
    assert [d.message_id for d in net.events(ALICE, MessageDelivered)][-1] == again


def test_messages_to_a_peer_that_left_wait_for_it_and_go_when_it_is_back() -> None:
    net = chatting(MemNet())
    net.close(BOB)
    net.detach(BOB)
    net.run_for(1)
    assert [e.reason.value for e in net.events(ALICE, PeerLeft)] == ["bye"]
    ids = [direct(net, text) for text in ("one", "two", "three")]
    held = net.events(ALICE, MessageHeld)
    assert [(h.message_id, h.reason) for h in held] == [(i, "bob is away") for i in ids]
    assert all(h.expires_in == 7 * 86400 for h in held)
    assert net.session(ALICE).pending() == 0  # nothing on the wire: quitting waits for none
    sent_before = len(net.sent)
    net.run_for(600)
    data = [s for s in net.sent[sent_before:] if isinstance(s.record, wire.Data)]
    assert data == []  # not retried towards nobody
    bob_returns(net)
    net.run_until_settled()
    assert net.texts(BOB) == ["one", "two", "three"]
    assert [d.message_id for d in net.events(ALICE, MessageDelivered)] == ids
    assert net.events(ALICE, DeliveryFailed) == []


def test_a_message_that_gets_no_answer_is_held_and_goes_when_the_peer_is_heard_again() -> None:
    net = chatting(MemNet())
    net.cut(ALICE, BOB)
    message = direct(net, "are you there")
    net.run_for(60)
    (held,) = net.events(ALICE, MessageHeld)
    assert held.message_id == message
    assert held.reason in ("bob is away", "no acknowledgement within 30 s")
    net.heal()
    net.run_until_settled()
    net.run_for(120)  # bob's next keepalive brings him back
    assert net.texts(BOB) == ["are you there"]
    assert [d.message_id for d in net.events(ALICE, MessageDelivered)] == [message]
    assert net.events(ALICE, DeliveryFailed) == []


def test_a_held_message_fails_when_its_time_is_up() -> None:
    net = chatting(MemNet(), keep=60.0)
    net.close(BOB)
    net.detach(BOB)
    net.run_for(1)
    message = direct(net, "too late")
    net.run_for(59)
    assert net.events(ALICE, DeliveryFailed) == []
    net.run_for(2)
    (failed,) = net.events(ALICE, DeliveryFailed)
    assert (failed.message_id, failed.reason) == (message, "bob was not back within 1 min")
    bob_returns(net)
    net.run_until_settled()
    assert net.texts(BOB) == []


def test_an_outboxed_message_past_its_time_fails_at_once() -> None:
    net = chatting(MemNet())
    outboxed = Outboxed(BOB_INSTANCE, "bob", EPOCH_MS - 1)
    message = net.session(ALICE).send_message(
        "stale", net.now, sent_at_ms=EPOCH_MS, outboxed=outboxed
    )
    net.flush(ALICE)
    (failed,) = net.events(ALICE, DeliveryFailed)
    assert failed.message_id == message and "not back within" in failed.reason


def test_a_held_message_can_be_cancelled_and_one_on_the_wire_cannot() -> None:
    net = chatting(MemNet())
    net.cut(ALICE, BOB)
    on_the_wire = direct(net, "sent")
    net.run_for(1)
    chat = net.session(ALICE)
    assert chat.cancel(on_the_wire, net.now) is False  # bob may have it already
    net.heal()
    net.run_until_settled()
    net.close(BOB)
    net.detach(BOB)
    net.run_for(1)
    held = direct(net, "held")
    assert chat.cancel(held, net.now) is True
    assert chat.cancel(held, net.now) is False
    net.flush(ALICE)
    assert [(f.message_id, f.reason) for f in net.events(ALICE, DeliveryFailed)] == [
        (held, "cancelled")
    ]
    bob_returns(net)
    net.run_until_settled()
    assert net.texts(BOB) == ["sent"]


def test_the_outbox_is_bounded_in_messages_and_bytes() -> None:
    net = chatting(MemNet(), max_held=2, max_held_bytes=10)
    net.close(BOB)
    net.detach(BOB)
    net.run_for(1)
    direct(net, "12345")
    with pytest.raises(OutboxFull, match="outbox full: 1 messages wait"):
        direct(net, "123456")  # 11 bytes
    direct(net, "67890")
    with pytest.raises(OutboxFull):
        direct(net, "x")
    assert len(net.events(ALICE, MessageHeld)) == 2


def test_with_keep_0_a_message_to_a_peer_that_left_fails_as_before() -> None:
    net = chatting(MemNet(), keep=0.0)
    net.close(BOB)
    net.detach(BOB)
    net.run_for(1)
    message = direct(net, "gone")
    net.run_for(40)
    assert net.events(ALICE, MessageHeld) == []
    (failed,) = net.events(ALICE, DeliveryFailed)
    assert failed.message_id == message


def test_room_lines_to_a_peer_that_left_fail_as_before() -> None:
    net = chatting(MemNet())
    net.cut(ALICE, BOB, both_ways=False)
    net.send(ALICE, "to the room")
    net.close(BOB)
    net.run_for(1)
    assert net.events(ALICE, MessageHeld) == []
    assert [f.reason for f in net.events(ALICE, DeliveryFailed)] == ["bob left"]


@pytest.mark.parametrize("seed", range(int(os.environ.get("UDPCHAT_RESTART_SEEDS", "8"))))
def test_a_receiver_restarting_mid_stream_loses_nothing_and_keeps_the_order(seed: int) -> None:
    """Bob dies (no BYE) while holding messages behind a gap that he acknowledged only
    selectively, and starts again at once: Alice sends him again every fragment his
    cumulative point had not passed, so nothing is lost, and the new Bob shows them in
    order. (Which of them the old Bob had shown is the history's to remember.)"""
    net = chatting(MemNet(seed=seed, drop=0.15, reorder=0.1, jitter=0.005))
    ids = [direct(net, f"m{i:03d}") for i in range(150)]
    net.run_for(random.Random(seed).uniform(0.02, 0.3))  # 150 messages take about 0.3 s
    old = net.texts(BOB)
    net.detach(BOB)
    bob_returns(net)
    net.run_until_settled()
    new = net.texts(BOB)[len(old) :]
    texts = [f"m{i:03d}" for i in range(150)]
    assert old == texts[: len(old)]
    assert new == sorted(set(new)) and set(old) | set(new) == set(texts)
    if new and len(old) < len(texts):
        assert new[0] <= texts[len(old)]  # where the old Bob stopped, or before
    assert net.events(ALICE, DeliveryFailed) == []
    delivered = {d.message_id for d in net.events(ALICE, MessageDelivered)}
    assert delivered == set(ids)


def test_a_keyed_room_line_owed_to_a_peer_that_restarted_fails_rather_than_lie() -> None:
    """A keyed room's line is sealed for the recipient's session: the new session could
    not open it and would only acknowledge it. So it fails, and is not delivered."""
    key = bytes(range(32))
    net = chatting(MemNet())
    net.session(ALICE).join("dev", net.now, key=key)
    net.session(BOB).join("dev", net.now, key=key)
    net.flush(ALICE)
    net.flush(BOB)
    net.run_for(2)
    net.cut(ALICE, BOB, both_ways=False)
    line = net.send(ALICE, "sealed", room="dev")
    net.run_for(1)
    net.detach(BOB)
    # Back in both rooms from its start, so that its HELLO lists #dev at once.
    net.attach(BOB, bob(b"bob-s002", rooms=("lobby", "dev"), room_keys=(("dev", key),)))
    net.add_peer(BOB, ALICE)
    net.heal()
    net.run_until_settled()
    (failed,) = net.events(ALICE, DeliveryFailed)
    assert failed.message_id == line and "restarted before showing it" in failed.reason
    assert line not in [d.message_id for d in net.events(ALICE, MessageDelivered)]
    assert net.texts(BOB) == []
