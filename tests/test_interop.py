"""All models speak one protocol: every (model, model) pair chats both ways, directly and
through the lossy relay, in plain and in shared-key mode."""

from __future__ import annotations

import itertools

import pytest
from conftest import OpenRuntime, collect_messages, wait_for
from relay import Faults, LossyRelay

from udpchat.protocol import Config, MessageReceived, PeerJoined
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
