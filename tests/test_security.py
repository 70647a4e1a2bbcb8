"""Shared-key mode and hostile input, in memory: nothing forged, altered, replayed or
sealed with another key gets through, and junk costs little and gets no answer."""

from __future__ import annotations

import re
import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memnet import ALICE, ALICE_SESSION, BOB, BOB_SESSION, EPOCH_MS, MemNet, pair

from udpchat.protocol import (
    Address,
    ChatSession,
    Config,
    DatagramRejected,
    DatagramsRefused,
    DeliveryFailed,
    MessageDelivered,
    MessageReceived,
    PeerJoined,
    RejectReason,
    WireError,
    wire,
)
from udpchat.protocol.crypto import (
    ORIGIN_ANYONE,
    ORIGIN_RECEIVE,
    ORIGIN_SEND,
    OVERHEAD,
    REPLAY_WINDOW,
    SEALED,
    Opener,
    Sealer,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
WALL = EPOCH_MS / 1000
"""The virtual clock's zero as wall-clock seconds, so stamps look real."""
STRANGER = ("10.0.0.66", 6666)

PLAIN = [
    wire.encode(wire.Data(ALICE_SESSION, 3, 1, 0, 1, "hi 你好".encode(), EPOCH_MS, "alice")),
    wire.encode(wire.Hello(ALICE_SESSION, "alice", True)),
    wire.encode(wire.Ack(ALICE_SESSION, BOB_SESSION, 5, 0b101)),
    wire.encode(wire.Ping(ALICE_SESSION, 9)),
    wire.encode(wire.Bye(ALICE_SESSION)),
]
TALLY: Counter[str] = Counter()
"""Datagrams tried per category, and rejected: the figures in docs/security.md."""


@pytest.fixture(scope="module", autouse=True)
def _print_tallies() -> Iterator[None]:
    """After the module: the tallies behind docs/security.md (shown with `pytest -s`)."""
    yield
    print()
    for name, count in sorted(TALLY.items()):
        print(f"  {name}: {count}")


def sealed(index: int = 0, *, key: bytes = KEY, stamp: int = EPOCH_MS) -> bytes:
    return Sealer(key, ALICE_SESSION, ORIGIN_SEND).seal(PLAIN[index], stamp, BOB_SESSION)


def rejected(category: str, data: bytes, opener: Opener | None = None) -> bool:
    """Whether an Opener refuses `data`; counts the attempt for the security figures."""
    opener = opener or Opener(KEY, max_skew=60)
    TALLY[f"{category} tried"] += 1
    try:
        opener.open(data, EPOCH_MS, BOB_SESSION)
    except WireError:
        TALLY[f"{category} rejected"] += 1
        return True
    return False


def test_sealed_example_in_the_spec_is_exact() -> None:
    spec = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text("utf-8")
    block = re.search(r"```sealed ping\n(.*?)```", spec, re.S)
    assert block is not None
    ping = wire.encode(wire.Ping(ALICE_SESSION, 7, 12))
    expected = Sealer(KEY, ALICE_SESSION, ORIGIN_SEND).seal(ping, EPOCH_MS, BOB_SESSION)
    assert bytes.fromhex(block.group(1)) == expected
    assert Opener(KEY, max_skew=60).open(expected, EPOCH_MS, BOB_SESSION) == (ping, True)


def test_sealed_datagram_opens_to_the_exact_plaintext() -> None:
    for index, plain in enumerate(PLAIN):
        data = sealed(index)
        assert data[:4] == b"UC\x03" + bytes((SEALED,)) and len(data) == len(plain) + OVERHEAD
        assert plain[12:] not in data or not plain[12:]  # the body is not readable
        assert Opener(KEY, max_skew=60).open(data, EPOCH_MS, BOB_SESSION) == (plain, True)


@settings(max_examples=500, deadline=None)
@given(index=st.integers(0, len(PLAIN) - 1), data=st.data())
def test_every_bit_flip_is_rejected(index: int, data: st.DataObject) -> None:
    original = sealed(index)
    bit = data.draw(st.integers(0, len(original) * 8 - 1))
    flipped = bytearray(original)
    flipped[bit // 8] ^= 1 << (bit % 8)
    assert rejected("bit-flipped", bytes(flipped))


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, len(PLAIN) - 1), data=st.data())
def test_every_truncation_and_extension_is_rejected(index: int, data: st.DataObject) -> None:
    original = sealed(index)
    cut = data.draw(st.integers(0, len(original) - 1))
    assert rejected("truncated", original[:cut])
    assert rejected("extended", original + data.draw(st.binary(min_size=1, max_size=32)))


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=1200), session=st.binary(min_size=8, max_size=8))
def test_forged_datagrams_are_rejected(body: bytes, session: bytes) -> None:
    assert rejected("forged", b"UC\x01" + bytes((SEALED,)) + session + body)


@settings(max_examples=200, deadline=None)
@given(index=st.integers(0, len(PLAIN) - 1), key=st.binary(min_size=32, max_size=32))
def test_datagram_sealed_with_another_key_is_rejected(index: int, key: bytes) -> None:
    if key != KEY:
        assert rejected("wrong key", sealed(index, key=key))


def test_replay_inside_the_window_is_rejected_after_one_acceptance() -> None:
    opener, sealer = Opener(KEY, max_skew=60), Sealer(KEY, ALICE_SESSION, ORIGIN_SEND)
    datagrams = [sealer.seal(PLAIN[0], EPOCH_MS, BOB_SESSION) for _ in range(50)]
    for data in reversed(datagrams):  # out of order is fine, once each
        assert not rejected("replay inside window (first copy)", data, opener)
    for data in datagrams:
        assert rejected("replay inside window", data, opener)


def test_replay_older_than_the_window_is_rejected() -> None:
    opener, sealer = Opener(KEY, max_skew=60), Sealer(KEY, ALICE_SESSION, ORIGIN_SEND)
    first = sealer.seal(
        PLAIN[0], EPOCH_MS, BOB_SESSION
    )  # never delivered; now falls out of the window
    for _ in range(REPLAY_WINDOW + 1):
        opener.open(sealer.seal(PLAIN[0], EPOCH_MS, BOB_SESSION), EPOCH_MS, BOB_SESSION)
    assert rejected("replay outside window", first, opener)


def test_datagram_moved_to_another_session_is_rejected() -> None:
    data = bytearray(sealed(0))
    data[4:12] = BOB_SESSION  # the session id is authenticated, and picks the key
    assert rejected("across sessions", bytes(data))


def test_halves_count_separately_so_their_nonces_never_meet() -> None:
    opener = Opener(KEY, max_skew=60)
    send_half = Sealer(KEY, ALICE_SESSION, ORIGIN_SEND).seal(PLAIN[0], EPOCH_MS, BOB_SESSION)
    receive_half = Sealer(KEY, ALICE_SESSION, ORIGIN_RECEIVE).seal(PLAIN[2], EPOCH_MS, BOB_SESSION)
    assert send_half[13:21] == receive_half[13:21]  # same counter value (1) ...
    assert opener.open(send_half, EPOCH_MS, BOB_SESSION) == (
        PLAIN[0],
        True,
    )  # ... yet both are accepted once
    assert opener.open(receive_half, EPOCH_MS, BOB_SESSION) == (PLAIN[2], True)
    assert rejected("replay of the other half", send_half, opener)


def test_replay_to_a_restarted_receiver_is_bounded_by_the_clock_skew() -> None:
    old = sealed(0, stamp=EPOCH_MS - 61_000)
    assert rejected("replay across a receiver restart (older than the skew)", old)
    recent = sealed(0, stamp=EPOCH_MS - 30_000)
    restarted = Opener(KEY, max_skew=60)  # a fresh receiver has no windows yet
    assert not rejected("replay across a receiver restart (within the skew)", recent, restarted)
    assert rejected("replay across a receiver restart (second copy)", recent, restarted)


def test_plain_datagram_is_refused_in_shared_key_mode_and_sealed_one_without_a_key() -> None:
    for plain in PLAIN:
        assert rejected("plaintext to a keyed receiver", plain)
    keyed = ChatSession("bob", session_id=BOB_SESSION, config=Config(key=KEY))
    unkeyed = ChatSession("carol", session_id=BOB_SESSION)
    for data in (sealed(0), sealed(1)):
        TALLY["sealed to a receiver without a key tried"] += 1
        unkeyed.receive_datagram(data, ALICE, 0.0)
    TALLY["sealed to a receiver without a key rejected"] += unkeyed.stats().auth_failed
    assert unkeyed.stats().auth_failed == 2 and not unkeyed.peers(0.0)
    keyed.receive_datagram(PLAIN[0], ALICE, 0.0)
    assert keyed.stats().auth_failed == 1 and not keyed.peers(0.0)


def test_failures_are_reported_once_with_a_count_and_answered_only_by_one_small_refusal() -> None:
    bob = ChatSession("bob", session_id=BOB_SESSION, config=Config(key=KEY), wall_offset=WALL)
    for i in range(100):
        bob.receive_datagram(sealed(i % len(PLAIN), key=OTHER_KEY), ALICE, i * 0.01)
    reports = []
    while (event := bob.next_event()) is not None:
        reports.append(event)
    assert len(reports) == 1 and isinstance(reports[0], DatagramRejected)
    assert reports[0].reason is RejectReason.AUTHENTICATION_FAILED
    # No ACK, no HELLO: one REFUSED notice for the whole burst, in clear, 13 bytes.
    (answer,) = bob.datagrams_to_send(1.0)
    assert answer == (
        wire.encode(wire.Refused(BOB_SESSION, RejectReason.AUTHENTICATION_FAILED)),
        ALICE,
    )
    assert len(answer[0]) == wire.REFUSED_SIZE == 13
    assert bob.stats().auth_failed == 100 and not bob.peers(1.0)
    bob.receive_datagram(sealed(0, key=OTHER_KEY), ALICE, 5.0)  # 5 s later: one more
    assert len(bob.datagrams_to_send(5.0)) == 1


def test_a_refusal_is_never_sent_for_junk_nor_for_a_datagram_smaller_than_itself() -> None:
    bob = ChatSession("bob", session_id=BOB_SESSION, config=Config(key=KEY), wall_offset=WALL)
    bob.receive_datagram(b"hello from netcat", STRANGER, 0.0)  # not udpchat at all
    bob.receive_datagram(wire.encode(wire.Bye(ALICE_SESSION)), ALICE, 0.0)  # 12 bytes, plain
    assert bob.datagrams_to_send(0.0) == []
    replayed = sealed(0)
    bob.receive_datagram(replayed, ALICE, 0.0)
    bob.receive_datagram(replayed, ALICE, 0.0)  # a replay says nothing to its sender
    kinds = [data[3] for data, _ in bob.datagrams_to_send(0.0)]
    assert wire.Kind.REFUSED not in kinds and bob.stats().auth_failed == 2


def mismatched(alice_key: bytes | None, bob_key: bytes | None) -> MemNet:
    """Alice and Bob naming each other as peers, each with its own key (or none)."""
    net = MemNet(seed=3)
    for addr, session, nick, key in (
        (ALICE, ALICE_SESSION, "alice", alice_key),
        (BOB, BOB_SESSION, "bob", bob_key),
    ):
        config = Config(key=key, give_up_after=3.0)
        net.attach(addr, ChatSession(nick, session_id=session, config=config, wall_offset=WALL))
    net.add_peer(ALICE, BOB)
    net.add_peer(BOB, ALICE)
    return net


@pytest.mark.parametrize(
    ("alice_key", "bob_key", "reason"),
    [
        (KEY, OTHER_KEY, RejectReason.AUTHENTICATION_FAILED),
        (KEY, None, RejectReason.SEALED_WITHOUT_KEY),
        (None, KEY, RejectReason.NOT_SEALED),
    ],
    ids=["other-key", "bob-has-none", "alice-has-none"],
)
def test_a_sender_whose_datagrams_fail_the_peers_checks_is_told_why(
    alice_key: bytes | None, bob_key: bytes | None, reason: RejectReason
) -> None:
    net = mismatched(alice_key, bob_key)
    net.send(ALICE, "can you read this?")
    net.run_for(5.0)
    refusals = net.events(ALICE, DatagramsRefused)
    assert refusals and refusals[0] == DatagramsRefused(peer=BOB, reason=reason)
    (failed,) = net.events(ALICE, DeliveryFailed)
    assert failed.reason == (
        f"no acknowledgement within 3 s; it could not authenticate our datagrams ({reason.value})"
    )
    assert net.texts(BOB) == [] and net.events(ALICE, PeerJoined) == []


def test_a_forged_refusal_from_a_present_peer_changes_nothing() -> None:
    net = pair(config=Config(key=KEY))
    net.run_for(1.0)
    net.inject(
        wire.encode(wire.Refused(BOB_SESSION, RejectReason.AUTHENTICATION_FAILED)), BOB, ALICE
    )
    net.send(ALICE, "still fine")
    net.run_until_settled()
    assert net.texts(BOB) == ["still fine"] and net.events(ALICE, DatagramsRefused) == []


def test_keyed_peers_chat_through_loss_and_nothing_travels_in_clear() -> None:
    net = pair(config=Config(key=KEY), drop=0.2, duplicate=0.1, jitter=0.02, seed=5)
    texts = [f"secret {i} 秘密" for i in range(200)]
    for text in texts:
        net.send(ALICE, text)
    net.run_until_settled()
    assert net.texts(BOB) == texts
    assert all(sent.data[3] == SEALED for sent in net.sent)
    assert not any("秘密".encode() in sent.data or b"secret" in sent.data for sent in net.sent)


def test_nonces_are_unique_over_a_thousand_restarts() -> None:
    """Each start draws a session id, hence a key; within it (origin, counter) only grows."""
    seen: set[tuple[bytes, bytes]] = set()
    for _ in range(1000):
        session = ChatSession(
            "alice", session_id=secrets.token_bytes(8), config=Config(key=KEY), wall_offset=WALL
        )
        session.add_peer(BOB, 0.0)
        session.send_message("x", 0.0, sent_at_ms=EPOCH_MS)
        for data, _ in session.datagrams_to_send(0.0):
            session_id, nonce = data[4:12], data[12:21]
            assert (session_id, nonce) not in seen
            seen.add((session_id, nonce))
    assert len({session_id for session_id, _ in seen}) == 1000


def test_junk_from_an_unknown_address_is_rate_limited_and_tables_stay_bounded() -> None:
    bob = ChatSession("bob", session_id=BOB_SESSION)
    for i in range(10_000):
        bob.receive_datagram(b"\x00junk %d" % i, STRANGER, i * 1e-5)  # 100,000 a second
    stats = bob.stats()
    assert stats.rate_limited > 9_000 and stats.foreign_dropped + stats.rate_limited == 10_000
    for i in range(5_000):
        bob.receive_datagram(b"\x00junk", (f"10.1.{i // 250}.{i % 250}", 7000), 1.0)
    assert len(bob.receiver._sources) <= bob.config.max_sources
    assert not bob.peers(1.0)
    # Text from as many addresses: plain text peers, at most `max_peers` of them.
    for i in range(5_000):
        bob.receive_datagram(b"hello", (f"10.2.{i // 250}.{i % 250}", 7000), 2.0)
    assert len(bob.peers(2.0)) == bob.config.max_peers


def test_a_reply_to_an_unverified_source_is_never_larger_than_what_it_sent() -> None:
    bob = ChatSession("bob", session_id=BOB_SESSION)
    for request in (wire.Ping(ALICE_SESSION, 1), wire.Hello(ALICE_SESSION, "a", True)):
        data = wire.encode(request)
        bob.receive_datagram(data, STRANGER, 0.0)
        replies = [out for out, addr in bob.datagrams_to_send(0.0) if addr == STRANGER]
        assert replies and all(len(reply) <= len(data) for reply in replies)


@pytest.mark.parametrize("seconds", [5.0])
def test_partition_heals_and_every_queued_message_arrives_once_in_order(seconds: float) -> None:
    net = pair(config=Config(key=KEY))
    net.run_for(1.0)
    net.cut(ALICE, BOB)
    texts = [f"during the partition {i}" for i in range(50)]
    for text in texts:
        net.send(ALICE, text)
        net.run_for(seconds / len(texts))
    healed = net.now
    net.heal()
    net.run_until_settled()
    assert net.texts(BOB) == texts
    recovery = net.times(BOB, MessageReceived)[-1] - healed
    TALLY[f"partition {seconds:g} s: recovery ms"] = round(recovery * 1000)
    assert recovery < Config().max_rto + 1.0  # at most one capped retransmission interval


CAROL = ("10.0.0.3", 4000)
CAROL_SESSION = bytes(range(0x21, 0x29))


def trio() -> MemNet:
    """Alice, Bob and Carol sharing one key: Alice names Bob and Carol, they name her."""
    net = MemNet()
    config = Config(key=KEY)
    for addr, nick, session in (
        (ALICE, "alice", ALICE_SESSION),
        (BOB, "bob", BOB_SESSION),
        (CAROL, "carol", CAROL_SESSION),
    ):
        net.attach(addr, ChatSession(nick, session_id=session, config=config))
    net.add_peer(ALICE, BOB)
    net.add_peer(ALICE, CAROL)
    net.add_peer(BOB, ALICE)
    net.add_peer(CAROL, ALICE)
    net.run_for(2.0)
    return net


def chat_is_whole(net: MemNet, sender: Address, receiver: Address, tag: str) -> None:
    """A burst from `sender` to `receiver` after the attack: each message shown once, in
    order, and reported delivered, and no peer restarted or joined twice."""
    texts = [f"{tag} {i}" for i in range(10)]
    shown_before = len(net.texts(receiver))
    ids = [net.send(sender, text, to=[receiver]) for text in texts]
    net.run_until_settled()
    assert net.texts(receiver)[shown_before:] == texts
    delivered = [e.message_id for e in net.events(sender, MessageDelivered) if e.peer == receiver]
    assert delivered[-len(ids) :] == ids
    for addr in (ALICE, BOB, CAROL):
        assert net.events(addr, DeliveryFailed) == []
        assert not [e for e in net.events(addr, PeerJoined) if e.restarted]
        joined = [e.peer for e in net.events(addr, PeerJoined)]
        assert len(joined) == len(set(joined))


@pytest.mark.parametrize("source", [STRANGER, ALICE, BOB], ids=["fresh", "sender", "peer"])
def test_a_datagram_sealed_for_bob_and_replayed_to_carol_is_rejected(source: Address) -> None:
    net = trio()
    for i in range(10):
        net.send(ALICE, f"for bob {i}", to=[BOB])
    net.run_until_settled()
    replays = [sent.data for sent in net.datagrams(src=ALICE, dst=BOB)]
    failed_before = net.session(CAROL).stats().auth_failed
    for data in replays:
        net.inject(data, source, CAROL)
    net.run_for(1.0)
    assert not [e for e in net.events(CAROL, MessageReceived) if e.text.startswith("for bob")]
    # Only the HELLOs Alice sealed for anyone, before Bob answered, open at Carol; every
    # other datagram was sealed for Bob's session and fails authentication.
    anyone = sum(data[12] == ORIGIN_ANYONE for data in replays)
    assert net.session(CAROL).stats().auth_failed - failed_before == len(replays) - anyone
    TALLY["sealed for Bob, replayed to Carol, tried"] += len(replays) - anyone
    TALLY["sealed for Bob, replayed to Carol, rejected"] += len(replays) - anyone
    chat_is_whole(net, ALICE, CAROL, "for carol")
    chat_is_whole(net, CAROL, ALICE, "from carol")
    assert net.texts(BOB) == [f"for bob {i}" for i in range(10)]


@pytest.mark.parametrize("source", [STRANGER, ALICE], ids=["fresh", "spoofed"])
def test_a_hello_sealed_for_anyone_and_replayed_restarts_and_moves_nobody(
    source: Address,
) -> None:
    net = trio()
    hellos = [s.data for s in net.datagrams(src=CAROL, dst=ALICE) if s.data[12] == ORIGIN_ANYONE]
    assert hellos  # Carol greeted Alice before Alice answered
    # Bob knows Alice at ALICE (and Carol, from Alice's roster of the lobby): Carol's
    # HELLO from Alice's address must not read as Alice restarting, and from a
    # stranger's address it must not make a peer.
    known = [(row.peer, row.present) for row in net.session(BOB).peers(net.now)]
    assert known == [(ALICE, True), (CAROL, True)]
    for data in hellos:
        net.inject(data, source, BOB)
    net.run_for(1.0)
    assert [(row.peer, row.present) for row in net.session(BOB).peers(net.now)] == known
    chat_is_whole(net, ALICE, BOB, "to bob")
    chat_is_whole(net, BOB, ALICE, "to alice")
    # And to Alice, who knows Carol, from a stranger: Carol's address does not move.
    for data in hellos:
        net.inject(data, STRANGER, ALICE)
    net.run_for(1.0)
    start = len(net.sent)
    chat_is_whole(net, ALICE, CAROL, "still at carol's")
    assert {s.dst for s in net.sent[start:] if s.src == ALICE} == {CAROL}


@pytest.mark.parametrize("source", [STRANGER, BOB], ids=["fresh", "spoofed"])
def test_our_own_sealed_datagrams_sent_back_to_us_are_dropped(source: Address) -> None:
    net = trio()
    for i in range(10):
        net.send(ALICE, f"for bob {i}", to=[BOB])
    net.run_until_settled()
    reflected = [sent.data for sent in net.datagrams(src=ALICE)]
    before = net.session(ALICE).stats()
    for data in reflected:
        net.inject(data, source, ALICE)
    net.run_for(1.0)
    # Sealed for someone else, or (a HELLO sealed for anyone) carrying our own session.
    after = net.session(ALICE).stats()
    anyone = sum(data[12] == ORIGIN_ANYONE for data in reflected)
    assert after.auth_failed - before.auth_failed == len(reflected) - anyone
    assert after.malformed_dropped - before.malformed_dropped == anyone
    reasons = {e.reason for e in net.events(ALICE, DatagramRejected)}  # one report per 5 s
    assert reasons and reasons <= {RejectReason.AUTHENTICATION_FAILED, RejectReason.OWN_SESSION}
    assert net.texts(ALICE) == []
    assert [row.peer for row in net.session(ALICE).peers(net.now)] == [BOB, CAROL]
    chat_is_whole(net, BOB, ALICE, "from bob")
    chat_is_whole(net, ALICE, BOB, "to bob")
