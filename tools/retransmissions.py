"""Retransmissions per message under reordering, with and without loss.

In memory on the virtual clock (tests/memnet.py), then over real sockets through the
tests' lossy relay (tests/relay.py), for every model: 1000 messages from one peer to
another over a path where a quarter of the datagrams are held back 1 to 10 ms.

    .venv/bin/python tools/retransmissions.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from memnet import ALICE, BOB, pair
from relay import Faults, LossyRelay

from udpchat.runtimes import MODELS, create_runtime

MESSAGES = 1000
SHAPES = {"reordering only": {}, "30 % loss, 10 % duplication": {"drop": 0.3, "duplicate": 0.1}}


def in_memory(seed: int, faults: dict[str, float]) -> float:
    net = pair(seed=seed, latency=0.0001, reorder=0.25, **faults)
    net.run_for(1.0)
    for i in range(MESSAGES):
        net.send(ALICE, f"m{i}")
        if i % 64 == 63:
            net.run_for(0.0005)
    net.run_until_settled()
    assert net.texts(BOB) == [f"m{i}" for i in range(MESSAGES)]
    return net.session(ALICE).stats().retransmissions / MESSAGES


def over_sockets(model: str, seed: int, faults: dict[str, float]) -> float:
    shape = Faults(
        loss=faults.get("drop", 0.0), duplicate=faults.get("duplicate", 0.0), reorder=0.25
    )
    with LossyRelay(shape, seed=seed) as relay:
        alice = create_runtime(model, "alice", bind="127.0.0.1")
        bob = create_runtime(model, "bob", bind="127.0.0.1")
        with alice, bob:
            relay.connect(alice.local_address, bob.local_address)
            alice.add_peer(relay.address_for_a)
            bob.add_peer(relay.address_for_b)
            deadline = time.monotonic() + 10
            while not alice.peers() or not alice.peers()[0].present:
                if time.monotonic() > deadline:
                    raise RuntimeError("the peers did not meet")
                time.sleep(0.01)
            for i in range(MESSAGES):
                alice.send(f"m{i}")
            if not alice.wait_delivered(60):
                raise RuntimeError("not delivered within 60 s")
            return alice.stats().retransmissions / MESSAGES


def main() -> None:
    for name, faults in SHAPES.items():
        figures = [in_memory(seed, faults) for seed in range(1, 11)]
        print(f"memnet, {name}: {sum(figures) / len(figures):.3f} per message (10 seeds)")
    for name, faults in SHAPES.items():
        for model in MODELS:
            figures = [over_sockets(model, seed, faults) for seed in (1, 2, 3)]
            shown = " ".join(f"{figure:.2f}" for figure in figures)
            print(f"{model}, {name}: {shown} per message (seeds 1-3)")


if __name__ == "__main__":
    main()
