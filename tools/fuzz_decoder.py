"""Coverage-guided fuzzing of the decoder and the core with atheris (libFuzzer).

    .venv/bin/pip install atheris        # wheels exist for CPython 3.11
    .venv/bin/python tools/fuzz_decoder.py -max_total_time=300

The CI runs the shorter, dependency-free mutation fuzzer in tests/test_fuzz.py.
"""

import sys

import atheris

with atheris.instrument_imports():
    from udpchat.protocol import ChatSession, Config, WireError, wire

KEY = bytes(range(32))
# No rate limit: one address sending everything at one instant would be throttled, and
# the fuzzer would only exercise the throttle.
OPEN = {"unknown_rate": 1e12, "unknown_burst": 1e12}
plain = ChatSession("bob", session_id=bytes(8), config=Config(**OPEN))
keyed = ChatSession("bob", session_id=bytes(8), config=Config(key=KEY, **OPEN))


def one_input(data: bytes) -> None:
    try:
        wire.decode(data)
    except WireError:
        pass
    plain.receive_datagram(data, ("10.0.0.1", 4000), 0.0)
    keyed.receive_datagram(data, ("10.0.0.1", 4000), 0.0)
    plain.datagrams_to_send(0.0)
    keyed.datagrams_to_send(0.0)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
