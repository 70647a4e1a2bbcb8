"""Real sockets on 127.0.0.1 under attack: a junk flood, a partition, and a wrong key,
for every model."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from conftest import OpenRuntime, collect_messages, next_event, wait_for
from relay import Faults, LossyRelay

from udpchat.protocol import Config, DatagramRejected, DatagramsRefused, PeerJoined, RejectReason
from udpchat.protocol.crypto import derive_master_key
from udpchat.runtimes import ChatRuntime

KEY = derive_master_key(b"correct horse battery staple")
JUNK_PER_MESSAGE = 500  # junk datagrams Alice reads between two of Bob's messages


def read_more(runtime: ChatRuntime, count: int) -> Callable[[], bool]:
    """True once the runtime has read `count` more datagrams than it has now."""
    goal = runtime.stats().datagrams_received + count
    return lambda: runtime.stats().datagrams_received >= goal


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll a counter until the predicate holds: there is no event to wait on."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout:g} s")
        time.sleep(0.001)


def rss_kib(pids: list[int]) -> int:
    """Resident memory of these processes, summed."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def our_pids() -> list[int]:
    children = f"/proc/{os.getpid()}/task/{os.getpid()}/children"
    with open(children) as file:
        return [os.getpid(), *map(int, file.read().split())]


FLOODER = """
import os, socket, sys, threading
targets = [(host, int(port)) for host, port in (t.split(":") for t in sys.argv[1:])]
payload, sent, done = os.urandom(200), 0, threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
    while not done.is_set():
        for target in targets:
            try:
                junk.sendto(payload, target)
                sent += 1
            except OSError:
                pass  # our own send buffer is full
print(sent)
"""


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "shared-key"])
def test_chat_survives_a_junk_flood_with_bounded_memory(
    model: str, open_runtime: OpenRuntime, keyed: bool
) -> None:
    config = Config(key=KEY if keyed else None)
    alice = open_runtime(model, "alice", config=config)
    bob = open_runtime(model, "bob", peers=(alice.local_address,), config=config)
    wait_for(alice, lambda e: isinstance(e, PeerJoined))
    before = rss_kib(our_pids())
    targets = [f"{host}:{port}" for host, port in (alice.local_address, bob.local_address)]
    flooder = subprocess.Popen(
        [sys.executable, "-c", FLOODER, *targets],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    texts = [f"through the flood {i}" for i in range(300)]
    start = time.monotonic()
    try:
        # The chat runs inside the flood: each message goes out after Alice has read
        # another JUNK_PER_MESSAGE datagrams, counted by her own statistics.
        for text in texts:
            wait_until(read_more(alice, JUNK_PER_MESSAGE))
            bob.send(text)
        assert collect_messages(alice, len(texts)) == texts
        assert bob.wait_delivered(timeout=60)
        junk = int(flooder.communicate(input="", timeout=30)[0])
    finally:
        flooder.kill()
        flooder.communicate(timeout=10)
    seconds = time.monotonic() - start
    growth = rss_kib(our_pids()) - before
    stats = alice.stats()
    print(
        f"\n[{model} {'key' if keyed else 'plain'}] junk: {junk:,} datagrams in"
        f" {seconds:.1f} s ({junk / seconds:,.0f}/s) to both peers; alice read"
        f" {stats.datagrams_received:,}, rate-limited {stats.rate_limited:,}; chat:"
        f" {bob.stats().messages_delivered}/{len(texts)} delivered, in order, with"
        f" {bob.stats().retransmissions} retransmissions; RSS growth {growth} KiB"
    )
    assert stats.rate_limited > 0
    assert growth < 32 * 1024  # bounded: the tables are, and junk is never kept


def test_partition_of_five_seconds_heals_and_everything_arrives_once_in_order(
    model: str, open_runtime: OpenRuntime
) -> None:
    faults = Faults()
    with LossyRelay(faults, seed=3) as relay:
        alice = open_runtime(model, "alice")
        bob = open_runtime(model, "bob")
        relay.connect(alice.local_address, bob.local_address)
        alice.add_peer(relay.address_for_a)
        bob.add_peer(relay.address_for_b)
        wait_for(bob, lambda e: isinstance(e, PeerJoined))
        faults.blackout = True
        texts = [f"queued {i}" for i in range(100)]
        for text in texts:
            alice.send(text)
        assert next_event(bob, timeout=5.0) is None  # the partition: nothing crosses
        faults.blackout = False
        healed = time.monotonic()
        assert collect_messages(bob, len(texts)) == texts
        recovery = time.monotonic() - healed
        assert alice.wait_delivered(timeout=30)
    print(f"\n[{model}] 5 s partition: all {len(texts)} delivered {recovery:.2f} s after the heal")
    assert alice.stats().messages_failed == 0


def test_wrong_key_gets_nothing_through_and_says_so(model: str, open_runtime: OpenRuntime) -> None:
    other = derive_master_key(b"a different passphrase")
    alice = open_runtime(model, "alice", config=Config(key=KEY))
    bob = open_runtime(model, "bob", peers=(alice.local_address,), config=Config(key=other))
    rejected = wait_for(alice, lambda e: isinstance(e, DatagramRejected))
    assert (
        isinstance(rejected, DatagramRejected)
        and rejected.reason is RejectReason.AUTHENTICATION_FAILED
    )
    assert alice.stats().auth_failed >= 1 and not alice.peers()
    assert bob.stats().messages_received == 0
    # ...and Bob, whose HELLOs those were, is told why nobody answers.
    refused = wait_for(bob, lambda e: isinstance(e, DatagramsRefused))
    assert refused == DatagramsRefused(
        peer=alice.local_address, reason=RejectReason.AUTHENTICATION_FAILED
    )
