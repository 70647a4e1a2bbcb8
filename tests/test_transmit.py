"""What every runtime does with a flush (`runtimes/base.py`): the datagrams go out before
the events, and the errors the kernel reports for a datagram become `SendFailed` events,
rate-limited per peer, while a full buffer stays silent. On a virtual clock."""

from __future__ import annotations

import errno

from udpchat.protocol import Address, Event, MessageReceived, SendFailed
from udpchat.runtimes.base import Flushed, SendErrors, Transmitter

BROADCAST: Address = ("192.0.2.255", 9000)
BOB: Address = ("192.0.2.1", 9000)
HELLO = MessageReceived(peer=BOB, nick="bob", text="hello", sent_at_ms=0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Wire:
    """A fake socket's sendto that refuses some addresses, and a log of what happened."""

    def __init__(self, refuse: dict[Address, int]) -> None:
        self.refuse = refuse
        self.log: list[object] = []

    def sendto(self, data: bytes, addr: Address) -> None:
        if addr in self.refuse:
            code = self.refuse[addr]
            raise OSError(code, {errno.EACCES: "Permission denied"}.get(code, "full"))
        self.log.append((data, addr))

    def publish(self, events: list[Event]) -> None:
        self.log.append(list(events))


def test_datagrams_leave_before_the_events_of_the_same_flush() -> None:
    wire = Wire({})
    Transmitter(wire.sendto, wire.publish).transmit(Flushed([(b"ack", BOB)], [HELLO], None))
    assert wire.log == [(b"ack", BOB), [HELLO]]


def test_the_process_models_receiver_hands_events_over_before_it_acknowledges() -> None:
    wire = Wire({})
    transmitter = Transmitter(wire.sendto, wire.publish, events_first=True)
    transmitter.transmit(Flushed([(b"ack", BOB)], [HELLO], None))
    assert wire.log == [[HELLO], (b"ack", BOB)]


def test_a_refused_datagram_is_reported_once_per_interval_with_a_count() -> None:
    clock, wire = Clock(), Wire({BROADCAST: errno.EACCES})
    transmitter = Transmitter(wire.sendto, wire.publish, clock=clock)

    def flush_one() -> None:
        transmitter.transmit(Flushed([(b"data", BROADCAST), (b"data", BOB)], [], None))

    flush_one()
    first = SendFailed(peer=BROADCAST, reason="Permission denied", count=1)
    assert wire.log == [(b"data", BOB), [first]]  # the other peer's datagram still left
    wire.log.clear()
    for _ in range(5):
        clock.now += 1.0
        flush_one()
    assert [entry for entry in wire.log if isinstance(entry, list)] == []  # not flooded
    clock.now += SendErrors.REPORT_INTERVAL
    flush_one()
    later = SendFailed(peer=BROADCAST, reason="Permission denied", count=6)
    assert wire.log[-1] == [later]


def test_a_full_buffer_is_not_reported() -> None:
    errors = SendErrors(Clock())
    for code in (errno.ENOBUFS, errno.EAGAIN):
        assert errors.failed(BOB, OSError(code, "full")) is None
    assert errors.failed(BOB, OSError(errno.ENETUNREACH, "Network is unreachable")) == (
        SendFailed(peer=BOB, reason="Network is unreachable", count=1)
    )
