"""Coverage-guided fuzzing of the decoder and the core with atheris (libFuzzer).

    .venv/bin/pip install atheris        # wheels exist for CPython 3.11
    .venv/bin/python tools/fuzz_decoder.py -max_total_time=300

Starts from the corpus of tests/fuzzing.py (every kind, plain and sealed) unless given a
corpus directory. The CI runs the shorter, dependency-free mutation fuzzer in
tests/test_fuzz.py.
"""

import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

with atheris.instrument_imports():
    # crypto too: the core imports it lazily, only once a key is given, and a module
    # imported outside this block is not instrumented, so its paths would not guide.
    import udpchat.protocol.crypto  # noqa: F401
    from udpchat.protocol import ChatSession, Config, WireError, wire

from fuzzing import KEY, STAMP_MS, corpus

# No rate limit: one address sending everything at one instant would be throttled, and
# the fuzzer would only exercise the throttle.
OPEN = {"unknown_rate": 1e12, "unknown_burst": 1e12}
# The corpus is stamped STAMP_MS: at the core's time 0 the keyed session's wall clock must
# read the same, or every sealed datagram would fail the clock check before decryption.
WALL = STAMP_MS / 1000
plain = ChatSession("bob", session_id=bytes(8), config=Config(**OPEN))
keyed = ChatSession("bob", session_id=bytes(8), config=Config(key=KEY, **OPEN), wall_offset=WALL)


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
    arguments = sys.argv
    if not any(not argument.startswith("-") for argument in arguments[1:]):
        seeds = Path(tempfile.mkdtemp(prefix="udpchat-fuzz-"))
        for number, datagram in enumerate(corpus()):
            (seeds / f"seed-{number:02d}").write_bytes(datagram)
        arguments = [*arguments, str(seeds)]
    atheris.Setup(arguments, one_input)
    atheris.Fuzz()
