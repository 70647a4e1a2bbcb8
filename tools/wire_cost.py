"""Cost of encoding and decoding one short chat message: udpchat's struct format vs JSON.

Run: .venv/bin/python tools/wire_cost.py   (figures quoted in docs/protocol.md)
"""

import json
import timeit

from udpchat.protocol import wire

SESSION = bytes(range(8))
TEXT = "hello, 你好"


def binary() -> None:
    data = wire.Data(SESSION, 42, 40, 0, 1, TEXT.encode(), 1764000000000, "alice")
    wire.decode(wire.encode(data)).payload.decode()


def as_json() -> None:
    record = {
        "v": 1,
        "kind": "data",
        "session": SESSION.hex(),
        "seq": 42,
        "base": 40,
        "index": 0,
        "count": 1,
        "sent_at": 1764000000000,
        "nick": "alice",
        "text": TEXT,
    }
    json.loads(json.dumps(record, ensure_ascii=False).encode())


for name, function in (("struct", binary), ("json", as_json)):
    runs = 200_000
    best = min(timeit.repeat(function, number=runs, repeat=5)) / runs
    print(f"{name:6s} encode+decode: {best * 1e6:.2f} µs per message")
