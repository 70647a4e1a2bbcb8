"""A lossy UDP relay for end-to-end tests, on 127.0.0.1 only.

Peer A talks to `relay.address_for_a`, peer B to `relay.address_for_b`; the relay
forwards each datagram to the other side from its own socket, so each peer sees one
stable peer address. Every datagram, in both directions (ACKs included), may be dropped,
duplicated or delayed past later ones, decided by a seeded random generator.
"""

from __future__ import annotations

import heapq
import random
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

Address = tuple[str, int]


@dataclass
class RelayCounts:
    received: int = 0
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    delayed: int = 0


@dataclass
class Faults:
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    """Share of datagrams held back 1-10 ms, so later ones overtake them."""
    blackout: bool = False
    """Drop everything while set (a partition)."""


@dataclass(order=True)
class _Delayed:
    due: float
    order: int
    data: bytes = field(compare=False)
    sock: socket.socket = field(compare=False)
    target: Address = field(compare=False)


class LossyRelay:
    def __init__(self, faults: Faults, seed: int = 1) -> None:
        self.faults = faults
        self.counts = RelayCounts()
        self._random = random.Random(seed)
        self._side_a = _bound()
        self._side_b = _bound()
        self.peer_a: Address | None = None
        self.peer_b: Address | None = None
        self._delayed: list[_Delayed] = []
        self._order = 0
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="lossy-relay", daemon=True)

    @property
    def address_for_a(self) -> Address:
        """Where peer A sends (the relay's side facing A)."""
        return _name(self._side_a)

    @property
    def address_for_b(self) -> Address:
        return _name(self._side_b)

    def connect(self, peer_a: Address, peer_b: Address) -> None:
        self.peer_a, self.peer_b = peer_a, peer_b

    def __enter__(self) -> LossyRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        for sock in (self._side_a, self._side_b, self._wake_r, self._wake_w):
            sock.close()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._side_a, selectors.EVENT_READ)
        selector.register(self._side_b, selectors.EVENT_READ)
        selector.register(self._wake_r, selectors.EVENT_READ)
        while not self._stop.is_set():
            timeout = None
            if self._delayed:
                timeout = max(0.0, self._delayed[0].due - time.monotonic())
            for key, _ in selector.select(timeout):
                sock = key.fileobj
                if sock is self._wake_r:
                    continue
                assert isinstance(sock, socket.socket)
                try:
                    data, source = sock.recvfrom(65536)
                except OSError:
                    continue
                self._route(sock, data, source)
            now = time.monotonic()
            while self._delayed and self._delayed[0].due <= now:
                item = heapq.heappop(self._delayed)
                _send(item.sock, item.data, item.target)
        selector.close()

    def _route(self, sock: socket.socket, data: bytes, source: Address) -> None:
        # A datagram arriving on A's side came from A and leaves from B's side towards B.
        if sock is self._side_a:
            self.peer_a = self.peer_a or source
            out, target = self._side_b, self.peer_b
        else:
            self.peer_b = self.peer_b or source
            out, target = self._side_a, self.peer_a
        self.counts.received += 1
        if target is None:
            self.counts.dropped += 1
            return
        faults, chance = self.faults, self._random.random
        if faults.blackout or chance() < faults.loss:
            self.counts.dropped += 1
            return
        copies = 2 if chance() < faults.duplicate else 1
        self.counts.duplicated += copies - 1
        for _ in range(copies):
            if chance() < faults.reorder:
                self.counts.delayed += 1
                self._order += 1
                due = time.monotonic() + 0.001 + 0.009 * chance()
                heapq.heappush(self._delayed, _Delayed(due, self._order, data, out, target))
            else:
                _send(out, data, target)
            self.counts.forwarded += 1


def _bound() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def _name(sock: socket.socket) -> Address:
    host, port = sock.getsockname()
    return (host, port)


def _send(sock: socket.socket, data: bytes, target: Address) -> None:
    try:
        sock.sendto(data, target)
    except OSError:
        pass
