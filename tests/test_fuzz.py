"""A fuzz run of the decoder and the core over a fixed number of mutated datagrams
(UDPCHAT_FUZZ_INPUTS, default 40,000: a few seconds).

Each input is seeded by its number, so a run is the same every time and a failure names
the seed that replays it. What is checked is behaviour, not speed: decode raises only
WireError, a session never raises on anything it receives, plain, in shared-key mode or
speaking IP Messenger too,
and the run reached every path it is meant to (decoded, refused, opened, rejected).
"""

from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import replace

from fuzzing import KEY, PEER_SESSION, STAMP_MS, corpus, mutate

from udpchat.protocol import ChatSession, Config, WireError, wire
from udpchat.protocol.crypto import Opener

FUZZ_INPUTS = int(os.environ.get("UDPCHAT_FUZZ_INPUTS", "40000"))


def test_mutated_datagrams_never_break_the_decoder_or_the_core() -> None:
    pool = corpus()
    # No rate limit, or most datagrams would only exercise the throttle.
    unlimited = Config(unknown_rate=1e12, unknown_burst=1e12)
    plain = ChatSession("bob", session_id=bytes(8), config=unlimited)
    keyed = ChatSession("bob", session_id=PEER_SESSION, config=replace(unlimited, key=KEY))
    ipmsg_chat = ChatSession("bob", config=replace(unlimited, ipmsg=True))
    opener = Opener(KEY, max_skew=60)
    outcomes: Counter[str] = Counter()
    for seed in range(FUZZ_INPUTS):
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
            opener.open(data, STAMP_MS, PEER_SESSION)
            outcomes["opened"] += 1
        except WireError:
            outcomes["not opened"] += 1
        plain.receive_datagram(data, addr, now)
        ipmsg_chat.receive_datagram(data, addr, now)
        ipmsg_chat.datagrams_to_send(now)
        keyed.receive_datagram(data, addr, now + STAMP_MS / 1000)
        plain.datagrams_to_send(now)
        keyed.datagrams_to_send(now + STAMP_MS / 1000)
    print(f"\n{FUZZ_INPUTS:,} mutated datagrams: {dict(outcomes)}")
    assert outcomes["decoded"] + outcomes["refused"] == FUZZ_INPUTS
    # Every path was reached: mutants that still decode, and sealed ones that still open
    # (an edit in padding or a duplicate), beside those refused.
    assert min(outcomes[name] for name in ("decoded", "refused", "opened", "not opened")) > 0
    assert ipmsg_chat.stats().ipmsg_received > 0
    keyed_stats, plain_stats = keyed.stats(), plain.stats()
    assert keyed_stats.auth_failed > 0 and plain_stats.malformed_dropped > 0
    assert keyed_stats.messages_received + plain_stats.messages_received > 0
