"""How long the lossy end-to-end exchange takes, run after run: the tail is what matters.

Run: .venv/bin/python tools/lossy_tail.py MODEL FIRST_SEED LAST_SEED [MAX_RTO]
(e.g. `tools/lossy_tail.py asyncio 200 260`; MAX_RTO sets `Config.max_rto`, to compare
back-off caps). Each run is the exchange of
tests/test_e2e.py's lossy test: two chats of MODEL on 127.0.0.1 behind the test relay
(30 % loss, 10 % duplication, 25 % of datagrams held back 1-10 ms), 1,000 messages each
way at once, until both sides have every message and every acknowledgement. It prints
each seed's seconds, then the median, 90th percentile and maximum. A message reported
failed makes its run print "FAILED".
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from relay import Faults, LossyRelay

from udpchat.protocol import Config, Event, MessageReceived
from udpchat.runtimes import create_runtime

MESSAGES = 1000


def run(model: str, seed: int, config: Config) -> float | None:
    """Seconds for one exchange, or None if a message failed or never came."""
    received = {"a": 0, "b": 0}
    done = threading.Event()

    def counter(side: str) -> Callable[[Event], None]:
        def on_event(event: Event) -> None:
            if isinstance(event, MessageReceived):
                received[side] += 1
                if received["a"] == received["b"] == MESSAGES:
                    done.set()

        return on_event

    start = time.monotonic()
    with LossyRelay(Faults(loss=0.30, duplicate=0.10, reorder=0.25), seed=seed) as relay:
        a = create_runtime(model, "alice", bind="127.0.0.1", config=config, on_event=counter("a"))
        b = create_runtime(model, "bob", bind="127.0.0.1", config=config, on_event=counter("b"))
        with a, b:
            relay.connect(a.local_address, b.local_address)
            a.add_peer(relay.address_for_a)
            b.add_peer(relay.address_for_b)
            sender = threading.Thread(target=lambda: [a.send(f"a{i}") for i in range(MESSAGES)])
            sender.start()
            for i in range(MESSAGES):
                b.send(f"b{i}")
            sender.join()
            whole = done.wait(120) and a.wait_delivered(60) and b.wait_delivered(60)
            failed = a.stats().messages_failed + b.stats().messages_failed
    return time.monotonic() - start if whole and not failed else None


def main() -> None:
    model, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    config = Config(max_rto=float(sys.argv[4])) if len(sys.argv) > 4 else Config()
    times = []
    for seed in range(first, last):
        took = run(model, seed, config)
        print(seed, "FAILED" if took is None else f"{took:.1f}", flush=True)
        if took is not None:
            times.append(took)
    times.sort()
    if times:
        p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
        print(
            f"{model}: {len(times)} runs, median {statistics.median(times):.1f} s,"
            f" p90 {p90:.1f} s, max {times[-1]:.1f} s"
        )


if __name__ == "__main__":
    main()
