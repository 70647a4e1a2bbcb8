"""The tests' side of the in-memory network (`udpchat.bench.memnet`): Alice, Bob and
a pair of them, at time 0."""

from __future__ import annotations

from typing import Any

from udpchat.bench.memnet import EPOCH_MS, Logged, MemNet, Sent
from udpchat.protocol import Address, ChatSession, Config

__all__ = [
    "ALICE",
    "ALICE_SESSION",
    "BOB",
    "BOB_SESSION",
    "EPOCH_MS",
    "LOBBY",
    "Logged",
    "MemNet",
    "Sent",
    "pair",
]

ALICE: Address = ("10.0.0.1", 4000)
BOB: Address = ("10.0.0.2", 4000)
ALICE_SESSION = bytes(range(1, 9))
BOB_SESSION = bytes(range(0x11, 0x19))
LOBBY = ("lobby",)
"""The rooms a chat starts in by default."""


def pair(*, config: Config | None = None, **network: Any) -> MemNet:
    """Alice and Bob on one network (`network`: `MemNet`'s seed, latency and faults),
    each configured with the other as a peer, at time 0."""
    net = MemNet(**network)
    net.attach(ALICE, ChatSession("alice", session_id=ALICE_SESSION, config=config))
    net.attach(BOB, ChatSession("bob", session_id=BOB_SESSION, config=config))
    net.add_peer(ALICE, BOB)
    net.add_peer(BOB, ALICE)
    return net
