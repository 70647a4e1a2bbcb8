"""A time-boxed fuzz run of the decoder and the core (UDPCHAT_FUZZ_SECONDS, default 5).

Each iteration is seeded by its number, so a failure names the seed that replays it.
What is checked is behaviour, not speed: decode raises only WireError, and a session
never raises on anything it receives, plain or in shared-key mode.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import replace

from fuzzing import KEY, STAMP_MS, corpus, mutate

from udpchat.protocol import ChatSession, Config, WireError, wire
from udpchat.protocol.crypto import Opener

FUZZ_SECONDS = float(os.environ.get("UDPCHAT_FUZZ_SECONDS", "5"))


def test_mutated_datagrams_never_break_the_decoder_or_the_core() -> None:
    pool = corpus()
    # No rate limit, or most datagrams would only exercise the throttle.
    unlimited = Config(unknown_rate=1e12, unknown_burst=1e12)
    plain = ChatSession("bob", session_id=bytes(8), config=unlimited)
    keyed = ChatSession("bob", session_id=bytes(8), config=replace(unlimited, key=KEY))
    opener = Opener(KEY, max_skew=60)
    deadline, seed, outcomes = time.monotonic() + FUZZ_SECONDS, 0, {"decoded": 0, "refused": 0}
    while time.monotonic() < deadline:
        rng = random.Random(seed)
        data = mutate(rng, rng.choice(pool), pool)
        addr = (f"10.9.{seed % 7}.{seed % 5}", 4000 + seed % 3)
        now = seed * 1e-4
        try:
            wire.decode(data)
            outcomes["decoded"] += 1
        except WireError:
            outcomes["refused"] += 1
        except Exception as error:  # pragma: no cover - the failure being hunted
            raise AssertionError(f"decode raised {error!r} on seed {seed}: {data.hex()}") from None
        try:
            opener.open(data, STAMP_MS)
        except WireError:
            pass
        plain.receive_datagram(data, addr, now)
        keyed.receive_datagram(data, addr, now + STAMP_MS / 1000)
        plain.datagrams_to_send(now)
        keyed.datagrams_to_send(now + STAMP_MS / 1000)
        seed += 1
    print(f"\n{seed:,} mutated datagrams in {FUZZ_SECONDS:g} s: {outcomes}")
    assert seed > 0
