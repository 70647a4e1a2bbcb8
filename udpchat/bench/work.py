"""The CPU work of the CPU-bound scenario, and where it runs.

The work is a chain of SHA-256 over 32-byte digests, `rounds` long. Each call hashes far
less than 2 KiB, and CPython's hashlib only releases the GIL for buffers of 2 KiB and
more (HASHLIB_GIL_MINSIZE), so the chain holds the GIL from start to end, like any work
written in Python. That is the point: `hashlib.pbkdf2_hmac` or one SHA-256 over a large
buffer would run with the GIL released, and two threads would then really use two
cores, hiding the very effect the scenario is there to show (the claims micro-benchmark
measures that case separately).

`HashWork.outgoing` and `incoming` are a stand-in for encryption and decryption: the
same cost on the send path and on the receive path, no secret. They append a short
digest, so the work cannot be skipped and the receiver sees that it was done.

Where the work runs: the peer puts a `HashWork` in the core's `Config.transform`, so the
core runs `outgoing` when its send half queues a message and `incoming` when its receive
half has reassembled one: in the thread model's threads, in the process model's two
child processes, in the asyncio model's loop and caller, each model in its own workers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def hash_chain(text: str, rounds: int) -> str:
    """SHA-256 applied `rounds` times, starting from `text`; 16 hex digits of the end."""
    digest = text.encode("utf-8")
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:16]


@dataclass(frozen=True, slots=True)
class HashWork:
    """Per-message CPU work on both paths; picklable, so a process model can ship it."""

    rounds: int
    """SHA-256 calls per message and per path."""

    def outgoing(self, text: str) -> str:
        """The send path's work: the text with the digest of its chain appended."""
        return f"{text}#{hash_chain(text, self.rounds)}"

    def incoming(self, text: str) -> str:
        """The receive path's work: the same cost again, over the received text."""
        return f"{text}#{hash_chain(text, self.rounds)}"
