"""The thread model: one UDP socket, a receiving thread and a sending thread.

The receiving thread blocks in `recvfrom`, drains whatever else is already queued in the
socket, feeds it all to the core and sends the acks this produced. The sending thread
sleeps on a queue until the core's next timer or until the caller hands it work, then
runs the timers and sends what is due. One lock guards the core, so the two threads (and
the caller's) never touch it at once; nothing is sent while the lock is held. Each thread
sends what its flush produced and then hands the flush's events to the caller's
`on_event`; flushes take turns for that, numbered under the lock, so events reach the
caller in the order the core produced them.

No busy polling: an idle client wakes only for the core's own timers (keepalive PINGs,
HELLOs to a configured peer that has not answered).
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..protocol import Address, ChatSession, Outboxed, PeerStatus, Stats
from . import base
from .base import CLOSED, Flushed, RuntimeBase, Transmitter
from .sockets import Reader, normalize

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..archive import Inbox
    from .base import RuntimeOptions


class ThreadRuntime(RuntimeBase):
    """`ChatRuntime` with a receiving thread and a sending thread over one socket."""

    model = "thread"

    def __init__(self, nick: str, **options: Unpack[RuntimeOptions]) -> None:
        super().__init__(nick, **options)
        self._core = ChatSession(nick, config=self._config, wall_offset=base.wall_offset())
        self._lock = threading.Condition()
        self._work: queue.SimpleQueue[object] = queue.SimpleQueue()
        """Wake-ups for the sending thread: None (new work), or CLOSED (stop)."""
        self._turns = threading.Condition(threading.Lock())
        self._next_turn = 0
        """The turn the next flush takes (guarded by the core's lock)."""
        self._serving = 0
        """The turn whose flush may transmit now (guarded by `_turns`)."""
        self._armed: float | None = None
        """When the sending thread will wake by itself (guarded by the lock)."""
        self._sock: socket.socket | None = None
        self._transmitter: Transmitter | None = None
        self._inbox_store: Inbox | None = None
        self._threads: list[threading.Thread] = []

    # -- ChatRuntime ----------------------------------------------------------

    @property
    def nick(self) -> str:
        return self._core.nick

    def open(self) -> None:
        self._sock = self._bind_socket()
        listener = self._discovery.listener if self._discovery is not None else None
        self._reader = Reader(self._sock, listener)
        self._inbox_store = self._inbox()
        self._transmitter = Transmitter(
            self._sock.sendto,
            self._outlet.publish,
            quiet=self._quiet,
            before=self._inbox_store.store if self._inbox_store is not None else None,
        )
        with self._lock:
            now = time.monotonic()
            self._core.start_announcing(self._announce_to)
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
        self._work.put(CLOSED)
        receiver, sender = self._threads
        sender.join(timeout=0.5)
        _wake_receiver(self._sock)
        receiver.join(timeout=0.5)
        self._sock.close()
        self._reader.close()
        self._close_discovery()
        if self._inbox_store is not None:
            self._inbox_store.close()
        self._outlet.shut()
        with self._lock:
            self._lock.notify_all()  # wakes wait_delivered: nothing more will be delivered

    def send(
        self,
        text: str,
        to: Sequence[Address] | None = None,
        *,
        room: str | None = None,
        key: bytes | None = None,
        outboxed: Outboxed | None = None,
        sent_at_ms: int | None = None,
    ) -> int:
        if self._sock is None or self._closing:
            raise RuntimeError("not open")
        with self._lock:
            message_id = self._core.send_message(
                text,
                time.monotonic(),
                sent_at_ms=base.wall_clock_ms() if sent_at_ms is None else sent_at_ms,
                to=base.as_targets(to),
                room=room,
                key=key,
                outboxed=outboxed,
            )
        self._work.put(None)
        return message_id

    def cancel(self, message_id: int) -> bool:
        with self._lock:
            cancelled = self._core.cancel(message_id, time.monotonic())
        self._work.put(None)
        return cancelled

    def join(self, room: str, key: bytes | None = None) -> str:
        with self._lock:
            room = self._core.join(room, time.monotonic(), key=key)
        self._work.put(None)
        return room

    def leave(self, room: str) -> str:
        with self._lock:
            room = self._core.leave(room, time.monotonic())
        self._work.put(None)
        return room

    @property
    def rooms(self) -> tuple[str, ...]:
        with self._lock:
            return self._core.rooms

    def add_peer(self, addr: Address) -> None:
        with self._lock:
            self._core.add_peer(addr, time.monotonic())
        self._work.put(None)

    def add_raw_peer(self, addr: Address, encoding: str | None = None) -> None:
        with self._lock:
            self._core.add_raw_peer(addr, time.monotonic(), encoding)
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
        while True:
            read = self._reader.read()
            if read is None or self._closing:  # woken by close()
                return
            batch, announced = read
            if not (batch or announced):
                continue
            with self._lock:
                now = time.monotonic()
                for data, source in batch:
                    self._core.receive_datagram(data, source, now)
                for data, source in announced:
                    self._core.receive_datagram(data, source, now, announced=True)
                flushed, turn = self._flush(now)
                timer = flushed.timer
                wake = timer is not None and (self._armed is None or timer < self._armed)
            self._transmit(flushed, turn)
            if wake:
                self._work.put(None)

    def _send_loop(self) -> None:
        with self._lock:
            timer = self._armed = self._core.get_timer()
        while True:
            timeout = None if timer is None else max(0.0, timer - time.monotonic())
            try:
                item = self._work.get(timeout=timeout)
            except queue.Empty:
                item = None
            # Take every wake-up already queued: a burst of send() calls is then one flush
            # (one lock, one window fill) instead of one flush per message.
            stop = item is CLOSED
            while not stop:
                try:
                    stop = self._work.get_nowait() is CLOSED
                except queue.Empty:
                    break
            with self._lock:
                now = time.monotonic()
                if stop:
                    self._core.close()
                due = self._core.get_timer()
                if due is not None and due <= now:
                    self._core.handle_timer(now)
                flushed, turn = self._flush(now)
                timer = self._armed = flushed.timer
            self._transmit(flushed, turn)
            if stop:
                return

    # -- helpers --------------------------------------------------------------

    def _flush(self, now: float) -> tuple[Flushed, int]:
        """Under the lock: take the core's output and a turn to transmit it, and wake
        anyone waiting on delivery."""
        flushed = base.flush(self._core, now)
        turn = self._next_turn
        self._next_turn += 1
        if self._core.pending() == 0:
            self._lock.notify_all()
        return flushed, turn

    def _transmit(self, flushed: Flushed, turn: int) -> None:
        """Send and publish a flush once the flushes taken before it are out, so that the
        events of the two threads reach `on_event` in the order the core produced them.
        The wait holds no lock the caller needs: a slow `on_event` in one thread stalls
        the other thread's output, never the caller's calls."""
        assert self._transmitter is not None
        with self._turns:
            self._turns.wait_for(lambda: self._serving == turn)
        try:
            self._transmitter.transmit(flushed)
        finally:
            with self._turns:
                self._serving += 1
                self._turns.notify_all()


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
