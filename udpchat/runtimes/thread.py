"""The thread model: one UDP socket, a receiving thread and a sending thread.

The receiving thread blocks in `recvfrom`, drains whatever else is already queued in the
socket, feeds it all to the core and sends the acks this produced. The sending thread
sleeps on a queue until the core's next timer or until the caller hands it work, then
runs the timers and sends what is due. One lock guards the core, so the two threads (and
the caller's) never touch it at once; nothing is sent while the lock is held. Each thread
sends what its flush produced and then hands the flush's events to the caller's
`on_event`, taking its turn to do so before it lets go of the core, so events reach the
caller in the order the core produced them.

No busy polling: an idle client wakes only for the core's own timers (keepalive PINGs
every 15 s, HELLOs to a configured peer that has not answered).
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Sequence

from ..protocol import Address, ChatSession, Config, Event, PeerStatus, Stats
from .base import EventCallback, EventOutlet, RuntimeContext, wall_clock_ms, wall_offset
from .sockets import RECEIVE_BUFFER, bind_socket, normalize, read_queued

_STOP = object()


class ThreadRuntime(RuntimeContext):
    """`ChatRuntime` with a receiving thread and a sending thread over one socket."""

    model = "thread"

    def __init__(
        self,
        nick: str,
        *,
        bind: str = "0.0.0.0",
        port: int = 0,
        peers: Sequence[Address] = (),
        config: Config | None = None,
        on_event: EventCallback | None = None,
    ) -> None:
        self._core = ChatSession(nick, config=config, wall_offset=wall_offset())
        self._bind, self._port, self._initial_peers = bind, port, list(peers)
        self._lock = threading.Condition()
        self._work: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._outlet = EventOutlet(on_event)
        self._turn = threading.Lock()
        """Held from the end of a flush (under the core's lock) until its events are out."""
        self._armed: float | None = None
        """When the sending thread will wake by itself (guarded by the lock)."""
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._closing = False

    # -- ChatRuntime ----------------------------------------------------------

    @property
    def local_address(self) -> Address:
        assert self._sock is not None, "not open"
        return normalize(self._sock.getsockname())

    @property
    def nick(self) -> str:
        return self._core.nick

    def open(self) -> None:
        self._sock = bind_socket(self._bind, self._port)
        with self._lock:
            now = time.monotonic()
            for addr in self._initial_peers:
                self._core.add_peer(addr, now)
        self._threads = [
            threading.Thread(target=self._receive_loop, name="udpchat-receive", daemon=True),
            threading.Thread(target=self._send_loop, name="udpchat-send", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._work.put(None)  # first flush: the HELLOs

    def close(self) -> None:
        if self._sock is None or self._closing:
            return
        self._closing = True
        self._work.put(_STOP)
        receiver, sender = self._threads
        sender.join(timeout=0.5)
        _wake_receiver(self._sock)
        receiver.join(timeout=0.5)
        self._sock.close()
        self._outlet.shut()
        with self._lock:
            self._lock.notify_all()  # wakes wait_delivered: nothing more will be delivered

    def send(self, text: str, to: Sequence[Address] | None = None) -> int:
        if self._sock is None or self._closing:
            raise RuntimeError("not open")
        targets = None if to is None else list(to)
        with self._lock:
            message_id = self._core.send_message(
                text, time.monotonic(), sent_at_ms=wall_clock_ms(), to=targets
            )
        self._work.put(None)
        return message_id

    def add_peer(self, addr: Address) -> None:
        with self._lock:
            self._core.add_peer(addr, time.monotonic())
        self._work.put(None)

    def remove_peer(self, addr: Address) -> None:
        with self._lock:
            self._core.remove_peer(addr, time.monotonic())
        self._work.put(None)

    def set_nick(self, nick: str) -> None:
        with self._lock:
            self._core.set_nick(nick)
        self._work.put(None)

    def wait_delivered(self, timeout: float) -> bool:
        """True once nothing is pending; False on timeout, or at once after `close`."""
        with self._lock:
            done = self._lock.wait_for(lambda: self._core.pending() == 0 or self._closing, timeout)
            return done and self._core.pending() == 0

    def pending(self) -> int:
        with self._lock:
            return self._core.pending()

    def stats(self) -> Stats:
        with self._lock:
            return self._core.stats()

    def peers(self) -> list[PeerStatus]:
        with self._lock:
            return self._core.peers(time.monotonic())

    # -- the two threads ------------------------------------------------------

    def _receive_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            try:
                data, addr = sock.recvfrom(RECEIVE_BUFFER)
            except OSError:
                if self._closing:
                    return
                continue  # e.g. an ICMP error reported on the socket: nothing to read
            if addr is None or self._closing:  # woken by close()
                return
            batch = [(data, normalize(addr))]
            read_queued(sock, batch)
            with self._lock:
                now = time.monotonic()
                for data, source in batch:
                    self._core.receive_datagram(data, source, now)
                out, events = self._flush(now)
                timer = self._core.get_timer()
                wake = timer is not None and (self._armed is None or timer < self._armed)
            self._transmit(out, events)
            if wake:
                self._work.put(None)

    def _send_loop(self) -> None:
        while True:
            with self._lock:
                timer = self._core.get_timer()
                self._armed = timer
            timeout = None if timer is None else max(0.0, timer - time.monotonic())
            try:
                item = self._work.get(timeout=timeout)
            except queue.Empty:
                item = None
            # Take every wake-up already queued: a burst of send() calls is then one flush
            # (one lock, one window fill) instead of one flush per message.
            stop = item is _STOP
            while not stop:
                try:
                    stop = self._work.get_nowait() is _STOP
                except queue.Empty:
                    break
            with self._lock:
                now = time.monotonic()
                if stop:
                    self._core.close()
                timer = self._core.get_timer()
                if timer is not None and timer <= now:
                    self._core.handle_timer(now)
                out, events = self._flush(now)
            self._transmit(out, events)
            if stop:
                return

    # -- helpers --------------------------------------------------------------

    def _flush(self, now: float) -> tuple[list[tuple[bytes, Address]], list[Event]]:
        """Under the lock: collect datagrams and events, wake anyone waiting on delivery,
        and take the turn to publish (given back by `_transmit`): the other thread's
        next flush then publishes after this one, as the core ordered them."""
        out = self._core.datagrams_to_send(now)
        events = self._take_events()
        if self._core.pending() == 0:
            self._lock.notify_all()
        self._turn.acquire()
        return out, events

    def _take_events(self) -> list[Event]:
        events = []
        while (event := self._core.next_event()) is not None:
            events.append(event)
        return events

    def _transmit(self, out: list[tuple[bytes, Address]], events: list[Event]) -> None:
        """Send, then publish the events. In this order: once the caller has seen a
        message it may close at once, and the ACK for that message must be out by then."""
        sock = self._sock
        assert sock is not None
        try:
            for data, addr in out:
                try:
                    sock.sendto(data, addr)
                except OSError:
                    # Unreachable network or a full buffer: the datagram is lost, as UDP
                    # may lose any; retransmission covers DATA, and the rest is best effort.
                    continue
            self._outlet.publish(events)
        finally:
            self._turn.release()


def _wake_receiver(sock: socket.socket) -> None:
    """Make a thread blocked in recvfrom return. On Linux shutdown() does it (and reports
    ENOTCONN for an unconnected socket); elsewhere a datagram to ourselves does."""
    try:
        # Reading only: a receiving thread may still be sending the ACKs of its last batch.
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    host, port = normalize(sock.getsockname())
    loopback = "::1" if sock.family == socket.AF_INET6 else "127.0.0.1"
    try:
        sock.sendto(b"", (loopback if host in ("0.0.0.0", "::") else host, port))
    except OSError:
        pass
