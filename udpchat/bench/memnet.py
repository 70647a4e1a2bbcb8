"""An in-memory network for `ChatSession`s, on a virtual clock (the tests' and the
presence benchmark's).

Callers attach sessions at made-up addresses, act on them, and step time by hand; nothing
here sleeps or opens a socket. Every datagram a session emits goes through one place,
`_transmit`, which can lose, duplicate or delay it (delay past later datagrams is how
reordering happens), decided by a seeded `random.Random` so a failing seed replays
exactly. Links can also be cut by hand, or datagrams dropped by a predicate, and a group
address delivers to every session listed for it, as multicast does.

The loop is aioquic's: after every input to a session (a call, a datagram, its timer) the
session is drained (`datagrams_to_send`, `next_event`), and time advances to the earliest
of the next arrival and the sessions' timers. Two checks run on every drain, because
they are invariants of the core rather than of any one test: no datagram is longer than
`MAX_DATAGRAM`, and after `handle_timer(now)` the timer lies in the future.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ..protocol import Address, ChatSession, Event, MessageReceived
from ..protocol.wire import MAX_DATAGRAM, Datagram, decode

__all__ = ["EPOCH_MS", "Logged", "MemNet", "Sent"]

E = TypeVar("E")
R = TypeVar("R")

# 2025-11-24 16:00:00 UTC, the virtual clock's zero as a wall clock.
EPOCH_MS = 1_764_000_000_000


@dataclass(frozen=True)
class Sent:
    """One datagram a session put on the wire (whatever then happened to it)."""

    time: float
    src: Address
    dst: Address
    data: bytes

    @property
    def record(self) -> Datagram:
        return decode(self.data)

    def decoded(self, kind: type[R]) -> R:
        """The record, checked to be of type `kind`."""
        record = decode(self.data)
        assert isinstance(record, kind), f"{record!r} is not a {kind.__name__}"
        return record


@dataclass(frozen=True)
class Logged:
    """One event a session reported, and when."""

    time: float
    addr: Address
    event: Event


class MemNet:
    """Sessions joined by a fake network with seeded loss, duplication and delay."""

    def __init__(
        self,
        *,
        seed: int = 0,
        latency: float = 0.01,
        jitter: float = 0.0,
        drop: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        now: float = 0.0,
    ) -> None:
        self.rng = random.Random(seed)
        self.latency = latency
        """One-way delay of every datagram."""
        self.jitter = jitter
        """Extra delay, uniform in [0, jitter): datagrams overtake each other."""
        self.drop = drop
        """Probability that a datagram is lost."""
        self.duplicate = duplicate
        """Probability that a datagram arrives twice (each copy with its own delay)."""
        self.reorder = reorder
        """Probability that a copy is held back a further 1 to 10 ms, as the e2e tests'
        relay does, so that later datagrams overtake it."""
        self.now = now
        self.sessions: dict[Address, ChatSession] = {}
        self.sent: list[Sent] = []
        """Every datagram sessions emitted, in order, lost ones included."""
        self.arrived: list[Sent] = []
        """Every datagram handed to a session, stamped with its arrival time."""
        self.log: list[Logged] = []
        self.cut_links: set[tuple[Address, Address]] = set()
        self.drop_if: Callable[[Sent], bool] | None = None
        """Extra loss rule: datagrams for which it returns True are lost."""
        self.also_at: dict[Address, Address] = {}
        """A second address of an attached session (a multi-homed host) -> the address it
        is attached at."""
        self.routes: dict[tuple[Address, Address], Address] = {}
        """(attached address, destination) -> the source address a datagram from that
        session to that destination carries, when it is not the attached address."""
        self.groups: dict[Address, list[Address]] = {}
        """A multicast or broadcast address -> the attached addresses that hear it (the
        sender among them, as with IP_MULTICAST_LOOP). Each copy is lost on its own."""
        self._queue: list[tuple[float, int, Address, Address, bytes, bool]] = []
        self._order = itertools.count()
        self._timers: dict[Address, float | None] = {}
        """Each session's timer as of its last drain: only an input changes it, and every
        input is followed by a drain, so asking each session at every step is not needed
        (it made runs of hundreds of sessions quadratic)."""

    # -- building the network -------------------------------------------------

    def attach(self, addr: Address, session: ChatSession) -> ChatSession:
        self.sessions[addr] = session
        self.flush(addr)
        return session

    def detach(self, addr: Address) -> ChatSession:
        """Take a session off the network; datagrams to its address are lost from now on."""
        self._timers.pop(addr, None)
        return self.sessions.pop(addr)

    def cut(self, a: Address, b: Address, *, both_ways: bool = True) -> None:
        self.cut_links.add((a, b))
        if both_ways:
            self.cut_links.add((b, a))

    def heal(self) -> None:
        self.cut_links.clear()
        self.drop_if = None

    # -- acting on sessions (each call drains the session) -----------------------

    def session(self, addr: Address) -> ChatSession:
        return self.sessions[addr]

    def add_peer(self, addr: Address, peer: Address) -> None:
        self.sessions[addr].add_peer(peer, self.now)
        self.flush(addr)

    def send(
        self, addr: Address, text: str, *, to: list[Address] | None = None, room: str | None = None
    ) -> int:
        """`send_message` from `addr` now, stamped with the virtual wall clock."""
        sent_at_ms = EPOCH_MS + round(self.now * 1000)
        session = self.sessions[addr]
        message_id = session.send_message(text, self.now, sent_at_ms=sent_at_ms, to=to, room=room)
        self.flush(addr)
        return message_id

    def join(self, addr: Address, room: str) -> None:
        self.sessions[addr].join(room, self.now)
        self.flush(addr)

    def leave(self, addr: Address, room: str) -> None:
        self.sessions[addr].leave(room, self.now)
        self.flush(addr)

    def close(self, addr: Address) -> None:
        self.sessions[addr].close()
        self.flush(addr)

    def inject(self, data: bytes, src: Address, dst: Address) -> None:
        """Hand `dst` a datagram from `src` right now, outside the loss model."""
        self._arrive(self.now, src, dst, data)

    def flush(self, addr: Address) -> None:
        """Put what `addr` has to send on the wire; log its events."""
        session = self.sessions[addr]
        for data, dst in session.datagrams_to_send(self.now):
            assert len(data) <= MAX_DATAGRAM, f"{len(data)}-byte datagram from {addr}"
            self._transmit(Sent(self.now, self.routes.get((addr, dst), addr), dst, data))
        while (event := session.next_event()) is not None:
            self.log.append(Logged(self.now, addr, event))
        self._timers[addr] = session.get_timer()

    # -- time -------------------------------------------------------------------

    def next_time(self) -> float | None:
        """When something next happens: an arrival or a session's timer."""
        times = [self._queue[0][0]] if self._queue else []
        times += [t for t in self._timers.values() if t is not None]
        return min(times, default=None)

    def run_until(self, until: float) -> None:
        """Deliver and fire everything due up to `until`, in time order; end at `until`."""
        while (when := self.next_time()) is not None and when <= until:
            self._step(max(self.now, when))
        self.now = max(self.now, until)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def run_until_settled(self, limit: float = 600.0) -> None:
        """Run until nothing is in flight and no session has a message pending.

        Fails if that has not happened `limit` seconds from now.
        """
        deadline = self.now + limit
        while self._queue or any(s.pending() for s in self.sessions.values()):
            when = self.next_time()
            assert when is not None and when <= deadline, "network did not settle"
            self._step(max(self.now, when))

    def _step(self, now: float) -> None:
        self.now = now
        while self._queue and self._queue[0][0] <= now:
            _, _, src, dst, data, announced = heapq.heappop(self._queue)
            self._arrive(now, src, dst, data, announced=announced)
        for addr, timer in list(self._timers.items()):
            session = self.sessions[addr]
            if timer is not None and timer <= now:
                session.handle_timer(now)
                self.flush(addr)
                after = session.get_timer()
                assert after is None or after > now, f"timer of {addr} stuck at {after}"

    def _transmit(self, sent: Sent) -> None:
        self.sent.append(sent)
        members = self.groups.get(sent.dst)
        for dst in members if members is not None else [sent.dst]:
            self._carry(sent, dst, announced=members is not None)

    def _carry(self, sent: Sent, dst: Address, *, announced: bool) -> None:
        """One copy towards `dst`; `announced`: it was sent to a group, and arrives as
        on a runtime's discovery socket."""
        if (sent.src, dst) in self.cut_links:
            return
        if self.drop_if is not None and self.drop_if(sent):
            return
        if self.rng.random() < self.drop:
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            delay = self.latency + self.rng.uniform(0.0, self.jitter)
            if self.reorder and self.rng.random() < self.reorder:
                delay += self.rng.uniform(0.001, 0.010)
            item = (sent.time + delay, next(self._order), sent.src, dst, sent.data, announced)
            heapq.heappush(self._queue, item)

    def _arrive(
        self, now: float, src: Address, dst: Address, data: bytes, *, announced: bool = False
    ) -> None:
        host = self.also_at.get(dst, dst)
        session = self.sessions.get(host)
        if session is None:
            return
        self.arrived.append(Sent(now, src, dst, data))
        session.receive_datagram(data, src, now, announced=announced)
        self.flush(host)

    # -- looking at what happened ---------------------------------------------------

    def events(self, addr: Address, kind: type[E]) -> list[E]:
        """The events of type `kind` that `addr` reported, in order."""
        return [e.event for e in self.log if e.addr == addr and isinstance(e.event, kind)]

    def all_events(self, addr: Address) -> list[Event]:
        return [entry.event for entry in self.log if entry.addr == addr]

    def times(self, addr: Address, kind: type) -> list[float]:
        """When `addr` reported each event of type `kind`."""
        return [e.time for e in self.log if e.addr == addr and isinstance(e.event, kind)]

    def texts(self, addr: Address) -> list[str]:
        """Texts of the messages `addr` received, in the order it showed them."""
        return [event.text for event in self.events(addr, MessageReceived)]

    def datagrams(
        self,
        *,
        src: Address | None = None,
        dst: Address | None = None,
        kind: type[Datagram] | None = None,
    ) -> list[Sent]:
        """Datagrams sessions emitted, filtered by sender, destination and record type."""
        return [
            s
            for s in self.sent
            if (src is None or s.src == src)
            and (dst is None or s.dst == dst)
            and (kind is None or type(s.record) is kind)
        ]
