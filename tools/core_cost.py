"""Cost per message of the core alone: two `ChatSession`s, datagrams passed by hand.

Run: .venv/bin/python tools/core_cost.py   (figures quoted in docs/models.md, "What rooms
cost"); with PYTHONPATH set to another checkout, the same for that tree. Prints the
messages per second and the microseconds per message (send, encode, decode, reassemble,
acknowledge), best of three runs of 20,000 messages of 100 bytes.
"""

from __future__ import annotations

import time

from udpchat.protocol import Address, ChatSession

A: Address = ("10.0.0.1", 1)
B: Address = ("10.0.0.2", 1)
MESSAGES = 20_000


def pump(a: ChatSession, b: ChatSession, now: float) -> None:
    moved = True
    while moved:
        moved = False
        for src, sender, receiver in ((A, a, b), (B, b, a)):
            for data, _ in sender.datagrams_to_send(now):
                receiver.receive_datagram(data, src, now)
                moved = True
        while a.next_event() is not None or b.next_event() is not None:
            pass


def one_run() -> float:
    a, b = ChatSession("alice"), ChatSession("bob")
    a.add_peer(B, 0.0)
    b.add_peer(A, 0.0)
    pump(a, b, 0.0)
    started = time.perf_counter()
    for i in range(MESSAGES):
        a.send_message("x" * 100, 1.0, sent_at_ms=0)
        if i % 32 == 31:
            pump(a, b, 1.0)
    pump(a, b, 1.0)
    elapsed = time.perf_counter() - started
    assert a.stats().messages_delivered == MESSAGES
    return elapsed


def main() -> None:
    best = min(one_run() for _ in range(3))
    print(f"{MESSAGES / best:,.0f} messages/s, {best / MESSAGES * 1e6:.1f} us per message")


if __name__ == "__main__":
    main()
