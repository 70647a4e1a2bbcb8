"""The raw baseline: a plain blocking UDP socket, no protocol, no acknowledgements.

It does what a chat peer does in each scenario with nothing on top of `sendto` and
`recvfrom`, so its figures are the limit of Python on this machine, and every model's
figure is also shown as a ratio of it. The socket gets the same kernel buffers as the
runtimes' sockets (`bind_socket`).

Throughput without acknowledgements can overrun the receiver: datagrams beyond the
receive buffer are dropped by the kernel. The receiver counts what arrived, and the
rate is what arrived per second from the sender's first `sendto` to the receiver's
last `recvfrom`; the loss is reported beside it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from ..protocol import Address
from ..runtimes.sockets import RECEIVE_BUFFER, bind_socket, normalize
from .work import hash_chain

_END = b"END"
_END_COPIES = 5
"""End markers sent after a burst; one is enough, the rest are in case one is dropped."""
_QUIET = 1.0
"""Seconds without a datagram after which a burst is taken to be over."""
_REPLY_TIMEOUT = 0.2
"""How long a ping waits for its echo before it counts as lost."""


def payload(kind: str, seq: int, size: int) -> str:
    """A message `size` bytes long (at least its header) that starts with `kind|seq|`."""
    head = f"{kind}|{seq:08d}|"
    return head + "x" * max(0, size - len(head))


def sequence_of(text: str) -> int:
    """The sequence number of a `payload`; ValueError if it is not one."""
    return int(text.split("|", 2)[1].split("#", 1)[0])


class RawEndpoint:
    """The baseline peer: one blocking socket on 127.0.0.1."""

    model = "baseline"

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._peer: Address | None = None

    @property
    def port(self) -> int:
        return normalize(self._socket().getsockname())[1]

    def open(self) -> None:
        self._sock = bind_socket("127.0.0.1", 0)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()

    def connect(self, peer: Address) -> dict[str, Any]:
        self._peer = peer
        return {}

    def expect(self, count: int, timeout: float, armed: Callable[[], None]) -> dict[str, Any]:
        """Receive a burst until its end marker, `count` datagrams, or a quiet second."""
        sock = self._socket()
        received = 0
        first = last = 0.0
        deadline = time.monotonic() + timeout
        sock.settimeout(min(timeout, _QUIET))
        armed()
        in_order = True
        expected = 0
        while received < count and time.monotonic() < deadline:
            try:
                data = sock.recv(RECEIVE_BUFFER)
            except TimeoutError:
                if received:
                    break
                continue
            if data == _END:
                break
            last = time.monotonic()
            if not received:
                first = last
            seq = sequence_of(data.decode())
            in_order = in_order and seq >= expected
            expected = seq + 1
            received += 1
        return {"received": received, "in_order": in_order, "first": first, "last": last}

    def blast(self, count: int, size: int, timeout: float) -> dict[str, Any]:
        """Send `count` datagrams as fast as `sendto` goes, then the end markers."""
        sock, peer = self._socket(), self._target()
        datagrams = [payload("T", seq, size).encode() for seq in range(count)]
        start = time.monotonic()
        for data in datagrams:
            sock.sendto(data, peer)
        end = time.monotonic()
        for _ in range(_END_COPIES):
            time.sleep(0.002)  # let the receiver drain, so the marker is not dropped
            sock.sendto(_END, peer)
        return {"start": start, "end": end, "delivered": count, "failed": 0}

    def ping(self, count: int, warmup: int, size: int, timeout: float) -> dict[str, Any]:
        """Round trips of one datagram each, in nanoseconds; a lost echo is skipped."""
        sock, peer = self._socket(), self._target()
        sock.settimeout(_REPLY_TIMEOUT)
        rtts: list[int] = []
        lost = 0
        deadline = time.monotonic() + timeout
        for seq in range(warmup + count):
            if time.monotonic() > deadline:
                break
            data = payload("P", seq, size).encode()
            started = time.perf_counter_ns()
            sock.sendto(data, peer)
            try:
                while sock.recv(RECEIVE_BUFFER) != data:
                    pass  # a late echo of an earlier, timed-out ping
            except TimeoutError:
                lost += 1
                continue
            if seq >= warmup:
                rtts.append(time.perf_counter_ns() - started)
        return {"rtt_ns": rtts, "lost": lost}

    def echo(self, count: int, timeout: float, armed: Callable[[], None]) -> dict[str, Any]:
        """Send back each of the next `count` datagrams to where it came from."""
        sock = self._socket()
        sock.settimeout(min(timeout, _QUIET))
        deadline = time.monotonic() + timeout
        echoed = 0
        armed()
        while echoed < count and time.monotonic() < deadline:
            try:
                data, addr = sock.recvfrom(RECEIVE_BUFFER)
            except TimeoutError:
                continue
            if data == _END:
                continue  # a spare end marker of the throughput burst before
            sock.sendto(data, addr)
            echoed += 1
        return {"echoed": echoed}

    def work(self, count: int, size: int, rounds: int) -> dict[str, Any]:
        """The CPU-bound scenario's work alone: one chain per message, in one thread."""
        texts = [payload("C", seq, size) for seq in range(count)]
        start = time.monotonic()
        for text in texts:
            hash_chain(text, rounds)
        return {"start": start, "end": time.monotonic()}

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise RuntimeError("not open")
        return self._sock

    def _target(self) -> Address:
        if self._peer is None:
            raise RuntimeError("no peer: send connect first")
        return self._peer
