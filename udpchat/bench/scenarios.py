"""The scenarios, run from the coordinator over a pair of peer processes.

Each function takes peers that are already started and connected, runs one
measurement, and returns one round's figures as a flat dict of plain numbers. Peer A
sends (or pings, or is the peer under test); peer B receives (or echoes, or is the
counterpart). The clock is CLOCK_MONOTONIC, which every process on the machine shares,
so A's start and B's last arrival can be compared.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .measure import process_tree, sample_pids, sample_tree
from .stats import percentile
from .workers import PeerError, PeerProcess

_ARM_TIMEOUT = 10.0
"""How long a peer may take to start waiting; it answers at once unless it is stuck."""


@contextlib.contextmanager
def pair(
    model: str,
    cpus_a: list[int] | None,
    cpus_b: list[int] | None,
    *,
    work_a: int = 0,
    history_b: bool = False,
) -> Iterator[tuple[PeerProcess, PeerProcess]]:
    """Two peers of `model`, started one after the other and connected both ways; with
    `history_b`, B (the receiver) keeps a history, storing each message before its ACK."""
    with (
        PeerProcess(model, cpus=cpus_a, work=work_a) as a,
        PeerProcess(model, cpus=cpus_b, history=history_b) as b,
    ):
        a.call("connect", timeout=10.0, peer=["127.0.0.1", b.port])
        b.call("connect", timeout=10.0, peer=["127.0.0.1", a.port])
        yield a, b


def tree_cpu_ns(peer: PeerProcess) -> int:
    """CPU time of a peer and its children so far: the peer's own count (which includes
    its ended threads) plus the children's threads, which live as long as they do."""
    own = int(peer.call("usage", timeout=5.0)["cpu_ns"])
    return own + sample_pids(process_tree(peer.pid)[1:]).cpu_ns


def throughput(
    a: PeerProcess, b: PeerProcess, *, count: int, size: int, timeout: float
) -> dict[str, Any]:
    """`count` messages of `size` bytes from A to B as fast as they go.

    For a chat model A waits for every acknowledgement and B checks that it received
    each message exactly once and in order; the rate is messages per second from A's
    first send to the later of A's last acknowledgement and B's last message.
    """
    before = tree_cpu_ns(a) + tree_cpu_ns(b)
    b.send("expect", count=count, timeout=timeout)
    b.wait_armed(_ARM_TIMEOUT)
    sent = a.call("blast", timeout=timeout, count=count, size=size)
    got = b.wait_reply(timeout + 5.0)
    cpu_ns = tree_cpu_ns(a) + tree_cpu_ns(b) - before
    memory = (sample_tree(a.pid), sample_tree(b.pid))
    received = int(got["received"])
    if received == 0:
        raise PeerError(f"{a.model}: nothing arrived")
    elapsed = max(sent["end"], got["last"]) - sent["start"]
    rate = received / elapsed
    exact = (
        received == count
        and got["in_order"]
        and got.get("duplicates", 0) == 0
        and sent["delivered"] == count
        and sent["failed"] == 0
    )
    return {
        "messages_per_s": rate,
        "mb_per_s": rate * size / 1e6,
        "cpu_s_per_1000": cpu_ns / 1e9 / received * 1000,
        "received": received,
        "lost": count - received,
        "exactly_once_in_order": exact,
        "retransmissions": int(sent.get("retransmissions", 0)),
        "duplicates_dropped_by_b": int(got.get("duplicates_dropped", 0)),
        "peak_rss_kib_a": memory[0].peak_rss_kib,
        "peak_rss_kib_b": memory[1].peak_rss_kib,
        "pss_kib_a": memory[0].pss_kib,
        "pss_kib_b": memory[1].pss_kib,
    }


def latency(
    a: PeerProcess, b: PeerProcess, *, count: int, warmup: int, size: int, timeout: float
) -> dict[str, Any]:
    """Ping-pong: A sends, B answers each ping with a message of its own, A times it."""
    b.send("echo", count=count + warmup, timeout=timeout)
    b.wait_armed(_ARM_TIMEOUT)
    pinged = a.call("ping", timeout=timeout, count=count, warmup=warmup, size=size)
    b.wait_reply(timeout + 5.0)
    rtts = [ns / 1000 for ns in pinged["rtt_ns"]]
    if not rtts:
        raise PeerError(f"{a.model}: no round trip completed")
    return {
        "p50_us": percentile(rtts, 0.50),
        "p90_us": percentile(rtts, 0.90),
        "p99_us": percentile(rtts, 0.99),
        "round_trips": len(rtts),
        "lost": int(pinged["lost"]),
    }


def cpu_bound(
    a: PeerProcess, b: PeerProcess, *, count: int, size: int, timeout: float
) -> dict[str, Any]:
    """A (which does the work) and B (which does none) send `count` messages each way.

    The rate is the messages A worked on (its `count` sent and `count` received) per
    second of the whole exchange.
    """
    before = tree_cpu_ns(a)
    a.send("exchange", count=count, size=size, timeout=timeout)
    b.send("exchange", count=count, size=size, timeout=timeout)
    done_a = a.wait_reply(timeout + 5.0)
    done_b = b.wait_reply(timeout + 5.0)
    cpu_a = tree_cpu_ns(a) - before
    span = max(done_a["end"], done_b["end"]) - min(done_a["start"], done_b["start"])
    exact = all(
        done["received"] == count
        and done["in_order"]
        and done["delivered"] == count
        and done["failed"] == 0
        for done in (done_a, done_b)
    )
    return {
        "messages_per_s": 2 * count / span,
        "exactly_once_in_order": exact,
        "cores_used_by_a": cpu_a / 1e9 / span,
        "work_runs_in": str(done_a["work_runs_in"]),
    }


def work_alone(peer: PeerProcess, *, count: int, size: int, rounds: int) -> dict[str, Any]:
    """The CPU-bound scenario's baseline: the same work, no chat, one thread."""
    before = tree_cpu_ns(peer)
    done = peer.call("work", timeout=120.0, count=count, size=size, rounds=rounds)
    elapsed = done["end"] - done["start"]
    return {
        "messages_per_s": count / elapsed,
        "exactly_once_in_order": True,
        "cores_used_by_a": (tree_cpu_ns(peer) - before) / 1e9 / elapsed,
        "work_runs_in": "one thread, no chat",
    }
