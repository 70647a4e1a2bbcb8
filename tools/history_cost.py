"""What keeping history costs: acknowledged throughput with the receiver's history off
and on, per model, on 127.0.0.1.

Run: .venv/bin/python tools/history_cost.py [MESSAGES]   (default 5000; figures quoted in
docs/models.md, "What history costs"). For each model, alice says MESSAGES lines of 100
bytes in the lobby, where bob is, as fast as the outbox takes them, and the time until every
one is acknowledged is measured, best of three; with history on, bob stores each
message before its acknowledgement leaves. Also prints how long opening a history of
100,000 messages and reading a conversation's last 50 lines takes, against an empty one.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from udpchat.protocol import OutboxFull
from udpchat.runtimes import MODELS, create_runtime
from udpchat.store import History, Received

TEXT = "x" * 100


def throughput(model: str, messages: int, history: Path | None) -> float:
    bob = create_runtime(model, "bob", bind="127.0.0.1", port=0, history=history)
    bob.open()
    alice = create_runtime(model, "alice", bind="127.0.0.1", port=0, peers=[bob.local_address])
    alice.open()
    try:
        to = [bob.local_address]
        alice.send("warm-up", to=to)
        if not alice.wait_delivered(10):
            raise RuntimeError("no warm-up delivery")
        started = time.perf_counter()
        sent = 0
        while sent < messages:
            try:
                alice.send(TEXT)  # to the lobby, where bob is: every model's fast path
                sent += 1
            except OutboxFull:
                alice.wait_delivered(0.01)
        if not alice.wait_delivered(120):
            raise RuntimeError("not all delivered within 120 s")
        return messages / (time.perf_counter() - started)
    finally:
        alice.close()
        bob.close()


def opening(path: Path) -> float:
    """Milliseconds to open the history and read #lobby's last 50 lines, best of five."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        history = History.open(path)
        history.recent("#lobby", 50)
        history.close()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> None:
    messages = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with tempfile.TemporaryDirectory() as folder:
        for model in MODELS:
            off = max(throughput(model, messages, None) for _ in range(3))
            on = max(
                throughput(model, messages, Path(folder) / f"{model}-{run}.sqlite3")
                for run in range(3)
            )
            print(
                f"{model:8} history off {off:8,.0f} msg/s   on {on:8,.0f} msg/s"
                f"   on/off {on / off:.2f}"
            )
        empty, full = Path(folder) / "empty.sqlite3", Path(folder) / "full.sqlite3"
        History.open(empty).close()
        history = History.open(full)
        now = int(time.time() * 1000)
        for batch in range(100):
            history.add_received(
                [
                    Received("#lobby", "10.0.0.2:9000", "bob", f"line {i}", now, now, "udpchat")
                    for i in range(batch * 1000, batch * 1000 + 1000)
                ]
            )
        history.close()
        print(
            f"open + last 50 lines: empty history {opening(empty):.2f} ms,"
            f" 100,000 messages {opening(full):.2f} ms"
        )


if __name__ == "__main__":
    main()
