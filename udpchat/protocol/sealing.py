"""Which peer each outgoing datagram is for, and sealing a flush's worth of them.

In shared-key mode a datagram is sealed for its recipient's session (docs/protocol.md,
"Shared-key mode"), so the halves queue (datagram, address, recipient session). Before a
peer has been heard from its session is unknown (`ANYONE`), and only a HELLO (or an
ANNOUNCE, which is for every listener) may then go out: anything else would be refused
by every receiver. This module does not import
the cryptography package, so a chat without a key never loads it.
"""

from __future__ import annotations

from typing import Protocol

from .events import Address
from .wire import Kind

ANYONE = bytes(8)
"""The recipient of a datagram whose peer's session is not known yet."""
FOR_ANYONE = frozenset({Kind.HELLO, Kind.ANNOUNCE})
"""The kinds that may be sealed for ANYONE."""

Outgoing = tuple[bytes, Address, bytes]
"""(plaintext datagram, address, the session it is for, or ANYONE)."""


class Sealer(Protocol):
    def seal(self, datagram: bytes, wall_ms: int, recipient: bytes) -> bytes: ...


def seal_all(
    sealer: Sealer | None, outgoing: list[Outgoing], wall_ms: int
) -> list[tuple[bytes, Address]]:
    """The datagrams to put on the wire: as they are without a key; else each sealed
    for its recipient, and those that may not go to ANYONE left out."""
    if sealer is None:
        return [(data, addr) for data, addr, _ in outgoing]
    return [
        (sealer.seal(data, wall_ms, recipient), addr)
        for data, addr, recipient in outgoing
        if recipient != ANYONE or data[3] in FOR_ANYONE
    ]
