"""All models speak one protocol: every (model, model) pair chats both ways, directly and
through the lossy relay, in plain and in shared-key mode."""

from __future__ import annotations

import itertools

import pytest
from conftest import OpenRuntime, collect_messages, wait_for
from relay import Faults, LossyRelay

from udpchat.protocol import (
    Config,
    MemberJoined,
    MemberLeft,
    MessageReceived,
    NoPeers,
    PeerJoined,
)
from udpchat.protocol.crypto import derive_master_key
from udpchat.runtimes import MODELS

PAIRS = list(itertools.product(MODELS, repeat=2))
KEY = derive_master_key(b"interop")


def exchange(alice_model: str, bob_model: str, a, b, count: int) -> None:  # type: ignore[no-untyped-def]
    to_bob = [f"{alice_model}->{bob_model} {i} 你好" for i in range(count)]
    to_alice = [f"{bob_model}->{alice_model} {i} 🙂" for i in range(count)]
    for forth, back in zip(to_bob, to_alice, strict=True):
        a.send(forth)
        b.send(back)
    assert collect_messages(b, count) == to_bob
    assert collect_messages(a, count) == to_alice
    assert a.wait_delivered(timeout=60) and b.wait_delivered(timeout=60)


@pytest.mark.parametrize(("alice_model", "bob_model"), PAIRS)
@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "shared-key"])
def test_every_pair_of_models_chats_both_ways(
    open_runtime: OpenRuntime, alice_model: str, bob_model: str, keyed: bool
) -> None:
    config = Config(key=KEY if keyed else None)
    alice = open_runtime(alice_model, "alice", config=config)
    bob = open_runtime(bob_model, "bob", peers=(alice.local_address,), config=config)
    joined = wait_for(alice, lambda e: isinstance(e, PeerJoined))
    assert isinstance(joined, PeerJoined) and joined.nick == "bob"
    exchange(alice_model, bob_model, alice, bob, 200)
    bob.set_nick("robert")
    bob.send("renamed")
    renamed = wait_for(alice, lambda e: isinstance(e, MessageReceived))
    assert isinstance(renamed, MessageReceived) and renamed.nick == "robert"


@pytest.mark.parametrize(("alice_model", "bob_model"), PAIRS)
def test_every_pair_of_models_chats_through_the_lossy_relay(
    open_runtime: OpenRuntime, alice_model: str, bob_model: str
) -> None:
    faults = Faults(loss=0.30, duplicate=0.10, reorder=0.25)
    with LossyRelay(faults, seed=7) as relay:
        alice = open_runtime(alice_model, "alice")
        bob = open_runtime(bob_model, "bob")
        relay.connect(alice.local_address, bob.local_address)
        alice.add_peer(relay.address_for_a)
        bob.add_peer(relay.address_for_b)
        exchange(alice_model, bob_model, alice, bob, 200)
    assert alice.stats().retransmissions + bob.stats().retransmissions > 0


ROTATIONS = [tuple(MODELS[i:] + MODELS[:i]) for i in range(len(MODELS))]


@pytest.mark.parametrize("models", ROTATIONS, ids="-".join)
def test_rooms_and_direct_messages_across_models(
    open_runtime: OpenRuntime, models: tuple[str, str, str]
) -> None:
    """Each model joins, leaves, says a line in a room and sends a direct message; each
    runtime's `join` reaches its core (in the process model, the sending process)."""
    alice = open_runtime(models[0], "alice")
    bob = open_runtime(models[1], "bob", peers=(alice.local_address,))
    carol = open_runtime(models[2], "carol", peers=(alice.local_address,))
    everyone = {alice: "alice", bob: "bob", carol: "carol"}
    for runtime, nick in everyone.items():
        waiting = set(everyone.values()) - {nick}  # the roster introduces bob and carol
        while waiting:
            joined = wait_for(runtime, lambda e: isinstance(e, PeerJoined))
            assert isinstance(joined, PeerJoined)
            waiting.discard(joined.nick)
    assert bob.join("#Dev") == "dev" and carol.join("dev") == "dev"
    assert tuple(bob.rooms) == tuple(carol.rooms) == ("lobby", "dev")
    for runtime in (carol, alice):
        member = wait_for(runtime, lambda e: isinstance(e, MemberJoined) and e.nick == "bob")
        assert isinstance(member, MemberJoined) and member.room == "dev"
    wait_for(bob, lambda e: isinstance(e, MemberJoined) and e.nick == "carol")
    bob.send("dev only", room="dev")
    got = wait_for(carol, lambda e: isinstance(e, MessageReceived))
    assert isinstance(got, MessageReceived) and (got.room, got.text) == ("dev", "dev only")
    alice.send("just carol", to=[carol.local_address])
    got = wait_for(carol, lambda e: isinstance(e, MessageReceived))
    assert isinstance(got, MessageReceived) and (got.room, got.text) == ("", "just carol")
    assert carol.leave("dev") == "dev"
    assert list(carol.rooms) == ["lobby"]
    left = wait_for(bob, lambda e: isinstance(e, MemberLeft))
    assert isinstance(left, MemberLeft) and (left.nick, left.room) == ("carol", "dev")
    with pytest.raises(NoPeers, match="nobody else is in #dev"):
        bob.send("anyone left?", room="dev")
    bob.send("to the lobby")
    for runtime in (alice, carol):
        got = wait_for(runtime, lambda e: isinstance(e, MessageReceived))
        # Alice never saw "dev only" nor "just carol": her first message is this one.
        assert isinstance(got, MessageReceived) and (got.room, got.text) == (
            "lobby",
            "to the lobby",
        )
    for runtime in everyone:
        assert runtime.wait_delivered(timeout=10)


@pytest.mark.parametrize("models", ROTATIONS, ids="-".join)
def test_a_keyed_room_across_models_reaches_only_the_key_holders(
    open_runtime: OpenRuntime, models: tuple[str, str, str]
) -> None:
    """The key reaches both halves in every model (in the process model, both
    children): the receiving half checks tags and opens lines, the sending half lists
    and seals."""
    secret = derive_master_key(b"a keyed room across models")
    alice = open_runtime(models[0], "alice")
    bob = open_runtime(models[1], "bob", peers=(alice.local_address,))
    carol = open_runtime(models[2], "carol", peers=(alice.local_address,))
    for runtime in (alice, bob):
        waiting = {"alice", "bob", "carol"} - {"alice" if runtime is alice else "bob"}
        while waiting:
            joined = wait_for(runtime, lambda e: isinstance(e, PeerJoined))
            assert isinstance(joined, PeerJoined)
            waiting.discard(joined.nick)
    assert alice.join("secret", secret) == "secret"
    bob.join("secret", secret)
    carol.join("secret")  # a room of the same name, without the key: another room
    member = wait_for(alice, lambda e: isinstance(e, MemberJoined))
    assert isinstance(member, MemberJoined) and (member.nick, member.room) == ("bob", "secret")
    alice.send("sealed for bob", room="secret")
    got = wait_for(bob, lambda e: isinstance(e, MessageReceived))
    assert isinstance(got, MessageReceived) and (got.room, got.text) == ("secret", "sealed for bob")
    alice.send("to the lobby")
    got = wait_for(carol, lambda e: isinstance(e, MessageReceived))
    # Carol's first message is the lobby's: the keyed line never reached her.
    assert isinstance(got, MessageReceived) and got.text == "to the lobby"
    assert all("secret" not in row.rooms for row in carol.peers())
