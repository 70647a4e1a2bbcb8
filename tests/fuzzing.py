"""A structure-aware mutator for udpchat datagrams, shared by the CI fuzz test and the
atheris target in tools/fuzz_decoder.py."""

from __future__ import annotations

import random
import struct

from udpchat.protocol import RejectReason, ipmsg, wire
from udpchat.protocol.crypto import ORIGIN_RECEIVE, ORIGIN_SEND, Sealer
from udpchat.protocol.sealing import ANYONE

KEY = bytes(range(32))
SESSION = bytes(range(1, 9))
PEER_SESSION = bytes(range(0x11, 0x19))
STAMP_MS = 1_764_000_000_000
_INTERESTING = [0, 1, 2, 7, 58, 59, 63, 64, 127, 128, 255, 256, 1200, 65535, 2**32, 2**63]


def corpus() -> list[bytes]:
    """Valid datagrams of every kind, plain and sealed."""
    plain = [
        wire.encode(wire.Hello(SESSION, "alice", True)),
        wire.encode(wire.Hello(SESSION, "爱丽丝", False)),
        wire.encode(wire.Bye(SESSION)),
        wire.encode(wire.Ping(SESSION, 1)),
        wire.encode(wire.Pong(SESSION, 1)),
        wire.encode(wire.Data(SESSION, 0, 0, 0, 1, "hi 你好".encode(), STAMP_MS, "alice")),
        wire.encode(wire.Data(SESSION, 0, 0, 0, 2, b"first half", STAMP_MS, "alice")),
        wire.encode(wire.Data(SESSION, 1, 0, 1, 2, b"second half")),
        wire.encode(wire.Data(SESSION, 9, 4, 0, 1, b"x" * 1100, STAMP_MS, "a")),
        wire.encode(wire.Ack(PEER_SESSION, SESSION, 5, 0b1011, 3)),
        wire.encode(wire.Refused(PEER_SESSION, RejectReason.CLOCK_SKEW)),
    ]
    sealed = [
        Sealer(KEY, SESSION, ORIGIN_SEND).seal(data, STAMP_MS, PEER_SESSION) for data in plain
    ]
    sealed.append(Sealer(KEY, SESSION, ORIGIN_RECEIVE).seal(plain[-1], STAMP_MS, PEER_SESSION))
    sealed.append(Sealer(KEY, SESSION, ORIGIN_SEND).seal(plain[0], STAMP_MS, ANYONE))
    ipmsg_packets = [
        b"1_iptux 0.8.3:4:root:vm:259:tux\0lab\0icon-tux.png\0utf-8\0",
        b"1:1764000000:xh:pc:16777217:" + ipmsg.entry_extra("小红", "研发部", "xh", "pc"),
        b"1_lbt6_0#128#MAC:1764000001:feiq:PC:288:" + "你好\0".encode("gbk"),
        b"1:1764000002:u:h:2097440:see\x000:a::b.txt:1f4:5f000000:1:\x07",
        b"1_iptux 0.8.3:7:root:vm:289:1796373138\0",
        b"1_iptux 0.8.3:8:root:vm:65538:\0",
    ]
    return plain + sealed + ipmsg_packets + [b"", b"hello from netcat\n", "你好".encode("gbk")]


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """One to four random edits: bit flips, bytes, inserts, deletes, splices, and
    interesting integers written over the header's fields."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(7)
        if choice == 0 and out:
            at = rng.randrange(len(out) * 8)
            out[at // 8] ^= 1 << (at % 8)
        elif choice == 1 and out:
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif choice == 2:
            at = rng.randint(0, len(out))
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        elif choice == 3 and out:
            at = rng.randrange(len(out))
            del out[at : at + rng.randint(1, 16)]
        elif choice == 4:
            other = rng.choice(pool)
            cut = rng.randint(0, len(out))
            out = out[:cut] + other[rng.randint(0, len(other)) :]
        elif choice == 5 and len(out) >= 8:
            at = rng.randrange(len(out) - 7)
            value = rng.choice(_INTERESTING) % 2**64
            out[at : at + 8] = struct.pack("!Q", value)
        elif choice == 6 and len(out) >= 2:
            at = rng.randrange(len(out) - 1)
            out[at : at + 2] = struct.pack("!H", rng.choice(_INTERESTING) % 2**16)
    return bytes(out[: rng.choice([len(out), 1300, 4000])])
