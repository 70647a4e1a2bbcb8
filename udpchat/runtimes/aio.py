"""The asyncio model: one `DatagramProtocol` around one `ChatSession`, in the aioquic manner.

`AsyncioChat` is the native endpoint for asyncio programs. Its three inputs are the
caller's calls, `datagram_received` and one `TimerHandle` armed at the core's
`get_timer()` (with `loop.time()`, which is monotonic, as the core's `now`). Every entry
point ends in one `_transmit()`: send what `datagrams_to_send` returns, hand the core's
events to `on_event` (or to the queue `next_event` reads), re-arm the timer. Flushing
once per entry point, never in the middle, keeps the core's batching (one ACK for a
burst), and no input can be left unflushed with no timer to come back for it. It runs
on one thread, the loop's, and so needs no lock.

Two details are for speed. The selector transport reads with `recvfrom(max_size)`, and
its default of 256 KiB lies above glibc's mmap threshold, so every datagram would cost an
mmap and a munmap (docs/models.md, "Figures behind the runtimes"); 64 KiB still holds
any datagram. And, like the thread model, a wake-up drains what else is already queued
in the socket before flushing, so a burst of DATA is answered by one ACK per peer.

`AsyncioRuntime` is the same endpoint behind the synchronous `ChatRuntime` interface: one
event loop in one background thread ("udpchat-asyncio") does every send, receive and
timer, and calls the caller's `on_event` with every event. Calls from the caller's thread
are handed to the loop (`call_soon_threadsafe`) and wait for its answer, except `send` to
every peer: it checks the message against what the loop published after its last flush
(the number of active peers and of pending deliveries), so that NoPeers, MessageTooLong
and OutboxFull are still raised in the caller, numbers the message, queues it and wakes
the loop once per burst; the loop takes the whole burst into the core and flushes once.
If the core refuses a message after all (the last peer left meanwhile), it fails with a
`DeliveryFailed` whose peer is None, as in the process model. Closing stops the loop only
after every call and message handed to it has been taken. Nothing polls: an idle chat
wakes only for the core's own timers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..protocol import (
    Address,
    ChatSession,
    Event,
    Outboxed,
    PeerJoined,
    PeerLeft,
    PeerStatus,
    Stats,
    encode_text,
)
from . import base
from .base import CLOSED, Endpoint, RuntimeBase, SendText, Transmitter, queue_message, refused
from .sockets import RECEIVE_BUFFER, normalize, read_queued

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..archive import Inbox
    from .base import RuntimeOptions

_CLOSE_TIMEOUT = 0.5
"""How long closing waits for the transport to let go of the socket before aborting it."""
_START_TIMEOUT = 5.0
"""How long `AsyncioRuntime.open` waits for its loop to bind and start."""

_T = TypeVar("_T")


class AsyncioChat(asyncio.DatagramProtocol, Endpoint):
    """A chat endpoint on the running event loop: one UDP socket, one `ChatSession`.

    Use it as an async context manager, or call `open` and `aclose`. Call its methods from
    the loop's thread only. Events go to `on_event` when one is given (called on the
    loop's thread, once per event, in order), else to an internal queue read by
    `next_event`.
    """

    def __init__(self, nick: str, **options: Unpack[RuntimeOptions]) -> None:
        Endpoint.__init__(self, nick, **options)
        self._core = ChatSession(nick, config=self._config, wall_offset=base.wall_offset())
        self._transmitter = Transmitter(self._sendto, self._publish)
        self._events: asyncio.Queue[object] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self._drain_from: socket.socket | None = None
        """Our socket when it is safe to read it directly (selector loops only)."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._delivery_waiters: list[asyncio.Future[None]] = []
        self._lost: asyncio.Future[None] | None = None
        self._closed = False
        self._sending = False
        """True while `_sendto` is inside the transport's sendto."""
        self._inbox_store: Inbox | None = None
        self._listening: asyncio.BaseTransport | None = None
        """The discovery socket's transport, when there is one."""

    # -- public API -----------------------------------------------------------

    @property
    def nick(self) -> str:
        return self._core.nick

    async def open(self) -> None:
        """Bind the socket, start receiving, greet the configured peers.

        Raises AddressError (a one-line reason) when the address cannot be bound.
        """
        if self._loop is not None or self._closed:
            raise RuntimeError("an AsyncioChat can be opened once")
        loop = self._loop = asyncio.get_running_loop()
        self._lost = loop.create_future()
        # Binding ourselves gives the same AddressError as every other model, at once.
        sock = self._bind_socket()
        try:
            await loop.create_datagram_endpoint(lambda: self, sock=sock)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        if self._discovery is not None:
            try:
                self._listening, _ = await loop.create_datagram_endpoint(
                    lambda: _Listener(self), sock=self._discovery.listener
                )
            except BaseException:
                self._transport = None
                sock.close()
                self._close_discovery()
                raise
            self._core.start_announcing(self._announce_to)
        self._inbox_store = self._inbox()
        self._transmitter = Transmitter(
            self._sendto,
            self._publish,
            quiet=self._quiet,
            before=self._inbox_store.store if self._inbox_store is not None else None,
        )
        # Reading the socket behind the transport's back is only safe where the transport
        # itself reads with a plain non-blocking recvfrom (not e.g. a proactor's overlapped
        # reads, which would reorder datagrams).
        if isinstance(loop, asyncio.SelectorEventLoop):
            self._drain_from = sock
        now = loop.time()
        for addr in self._initial_peers:
            self._core.add_peer(addr, now)
        self._transmit(now)

    async def aclose(self) -> None:
        """Say BYE, stop the timer and close the socket. Idempotent; returns within ~0.5 s."""
        if self._closed:
            if self._lost is not None:
                await asyncio.shield(self._lost)
            return
        self._closed = True
        self._core.close()
        if self._listening is not None:
            self._listening.close()
        transport, lost = self._transport, self._lost
        if transport is not None and lost is not None:
            self._transmit()
            transport.close()
            try:
                await asyncio.wait_for(asyncio.shield(lost), _CLOSE_TIMEOUT)
            except asyncio.TimeoutError:
                # Only a datagram stuck in the transport's write buffer delays the close;
                # it would be lost with the socket anyway.
                transport.abort()
                await asyncio.shield(lost)
        if self._inbox_store is not None:
            self._inbox_store.close()
        self._finish()

    async def __aenter__(self) -> AsyncioChat:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def send(
        self,
        text: str,
        to: Sequence[Address] | None = None,
        *,
        room: str | None = None,
        message_id: int | None = None,
        key: bytes | None = None,
        outboxed: Outboxed | None = None,
        sent_at_ms: int | None = None,
    ) -> int:
        """Say `text` in `room` (by default our first room), or send it directly to the
        peers in `to`; return its id for the delivery events (`message_id` when the
        caller numbers its messages itself). `key`, `outboxed` and `sent_at_ms` as in
        `ChatRuntime.send`.

        Raises MessageTooLong, NoPeers or OutboxFull (all LocalProtocolError).
        """
        now = self._now()
        message_id = self._core.send_message(
            text,
            now,
            sent_at_ms=base.wall_clock_ms() if sent_at_ms is None else sent_at_ms,
            to=base.as_targets(to),
            room=room,
            message_id=message_id,
            key=key,
            outboxed=outboxed,
        )
        self._transmit(now)
        return message_id

    def cancel(self, message_id: int) -> bool:
        """Take a held message out of the outbox (see `ChatRuntime.cancel`)."""
        now = self._now()
        cancelled = self._core.cancel(message_id, now)
        self._transmit(now)
        return cancelled

    def join(self, room: str, key: bytes | None = None) -> str:
        """Join `room` (keyed with `key`) and tell the peers; its name as known."""
        now = self._now()
        room = self._core.join(room, now, key=key)
        self._transmit(now)
        return room

    def leave(self, room: str) -> str:
        """Leave `room` and tell the peers."""
        now = self._now()
        room = self._core.leave(room, now)
        self._transmit(now)
        return room

    @property
    def rooms(self) -> tuple[str, ...]:
        return self._core.rooms

    def send_queued(self, messages: Iterable[SendText]) -> None:
        """Queue messages the caller has numbered, then flush once: a burst leaves as one
        window of DATA and is answered by one ACK. A message the core refuses (no peer,
        outbox full, too long) fails at once with a `DeliveryFailed` whose peer is None."""
        now = self._now()
        failures: list[Event] = []
        for message in messages:
            error = queue_message(self._core, message, now)
            if error is not None:
                failures.append(refused(message, error))
        self._transmit(now, failures)

    def active_peers(self) -> int:
        """How many peers a message sent now would go to."""
        return self._core.active_peers()

    def add_peer(self, addr: Address) -> None:
        """Send to `addr` from now on, greeting it with HELLOs until it answers."""
        now = self._now()
        self._core.add_peer(addr, now)
        self._transmit(now)

    def add_raw_peer(self, addr: Address, encoding: str | None = None) -> None:
        """Chat with `addr` as a plain text peer, in `encoding` or as it says."""
        now = self._now()
        self._core.add_raw_peer(addr, now, encoding)
        self._transmit(now)

    def remove_peer(self, addr: Address) -> None:
        """Stop sending to `addr` (its pending deliveries fail) and say BYE to it."""
        now = self._now()
        self._core.remove_peer(addr, now)
        self._transmit(now)

    def set_nick(self, nick: str) -> None:
        """Change the nickname and announce it; ValueError if it is not 1-32 bytes."""
        self._core.set_nick(nick)
        self._transmit()

    async def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event, waiting up to `timeout` seconds (None: forever).

        None on timeout, and at once when the chat is closed and no event is left.
        """
        if self._on_event is not None:
            raise RuntimeError("events go to the on_event given to AsyncioChat")
        try:
            item = self._events.get_nowait()  # the common case under load: no wait, no task
        except asyncio.QueueEmpty:
            try:
                item = await asyncio.wait_for(self._events.get(), timeout)
            except asyncio.TimeoutError:
                return None
        if item is CLOSED:
            self._events.put_nowait(CLOSED)  # for any other waiter
            return None
        return cast(Event, item)

    async def wait_delivered(self, timeout: float) -> bool:
        """Wait until every message sent so far is delivered or has failed.

        Returns False at the timeout, or at once if the chat closed with some pending.
        """
        loop = self._loop_or_fail()
        deadline = loop.time() + timeout
        # A loop, because another task may send a message between the flush that found
        # nothing pending and our waking up.
        while self.pending() != 0 and not self._closed:
            left = deadline - loop.time()
            if left <= 0:
                break
            waiter = loop.create_future()
            self._delivery_waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, left)
            except asyncio.TimeoutError:
                break
            finally:
                if waiter in self._delivery_waiters:
                    self._delivery_waiters.remove(waiter)
        return self.pending() == 0

    def pending(self) -> int:
        """Deliveries (message, peer) not yet acknowledged or failed."""
        return self._core.pending()

    def stats(self) -> Stats:
        """The core's counters since the chat opened."""
        return self._core.stats()

    def peers(self) -> list[PeerStatus]:
        """Every peer the core knows, as `/peers` shows them."""
        return self._core.peers(self._now())

    # -- asyncio.DatagramProtocol --------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        if hasattr(transport, "max_size"):  # private to the stdlib's datagram transports
            try:
                cast(Any, transport).max_size = RECEIVE_BUFFER
            except (AttributeError, TypeError):
                pass

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        batch = [(data, normalize(addr))]
        sock = self._drain_from
        if sock is not None and not self._closed:
            read_queued(sock, batch)
        now = self._now()
        for data, source in batch:
            self._core.receive_datagram(data, source, now)
        self._transmit(now)

    def heard(self, data: bytes, addr: Address) -> None:
        """A datagram on the discovery socket: an announcement, most likely."""
        if not self._closed:
            now = self._now()
            self._core.receive_datagram(data, addr, now, announced=True)
            self._transmit(now)

    def error_received(self, exc: Exception) -> None:
        if self._sending:
            # The selector transport calls this from inside its sendto when the kernel
            # refuses a datagram: raise it there, and the Transmitter reports it as in
            # the other models.
            raise exc
        # Otherwise an ICMP error (port unreachable, ...) or a send the transport had to
        # put off: UDP may lose any datagram, and retransmission or the peer timeout
        # deals with the consequences.

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        if not self._closed:  # the transport died under us (a fatal socket error)
            self._closed = True
            self._finish()

    # -- the one flush --------------------------------------------------------

    def _on_timer(self) -> None:
        # call_at may run a callback up to the clock's resolution early; the core must see
        # the time it asked for, or it would find nothing due and ask again.
        now = max(self._now(), self._timer_at or 0.0)
        self._timer = self._timer_at = None
        self._core.handle_timer(now)
        self._transmit(now)

    def _transmit(self, now: float | None = None, failures: list[Event] | None = None) -> None:
        """Send what the core has for the wire, pass its events on (after `failures`, the
        messages it refused), re-arm its timer."""
        flushed = base.flush(self._core, self._now() if now is None else now)
        if failures:
            flushed.events[:0] = failures
        when = None if self._closed else flushed.timer
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            loop = self._loop_or_fail()
            self._timer = None if when is None else loop.call_at(when, self._on_timer)
            self._timer_at = when
        # After the timer, so that an on_event that raises cannot leave it unarmed.
        self._transmitter.transmit(flushed)
        if self._delivery_waiters and self._core.pending() == 0:
            self._wake_delivery_waiters()

    def _sendto(self, data: bytes, addr: Address) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._sending = True
            try:
                transport.sendto(data, addr)
            finally:
                self._sending = False

    def _publish(self, events: list[Event]) -> None:
        if self._on_event is not None:
            for event in events:
                self._on_event(event)
        else:
            for event in events:
                self._events.put_nowait(event)

    # -- helpers --------------------------------------------------------------

    def _finish(self) -> None:
        """After the socket is gone: no more timers, wake every waiter."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None
        self._drain_from = None
        self._wake_delivery_waiters()
        if self._on_event is None:
            self._events.put_nowait(CLOSED)

    def _wake_delivery_waiters(self) -> None:
        waiters, self._delivery_waiters = self._delivery_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _loop_or_fail(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("not open")
        return self._loop

    def _now(self) -> float:
        return self._loop_or_fail().time()


class _Listener(asyncio.DatagramProtocol):
    """The discovery socket's protocol: what it hears goes to the chat's core."""

    def __init__(self, chat: AsyncioChat) -> None:
        self._chat = chat

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._chat.heard(data, normalize(addr))


class AsyncioRuntime(RuntimeBase):
    """`ChatRuntime` over an `AsyncioChat` whose event loop runs in a background thread.

    The chat belongs to the loop's thread: every call is handed to it and waits for the
    answer, but for `send` to every peer, which queues (see the module's docstring), and
    `pending`, which reads counts the loop publishes, so that it never waits (the UI asks
    it after every batch of events). Before `open` and once the loop's
    thread has ended, nothing else touches the chat, and `stats` and `peers` read it
    directly.
    """

    model = "asyncio"

    def __init__(self, nick: str, **options: Unpack[RuntimeOptions]) -> None:
        super().__init__(nick, **options)
        self._chat = AsyncioChat(
            nick,
            bind=self._bind,
            port=self._port,
            peers=self._initial_peers,
            config=self._config,
            on_event=self._on_chat_event,
            discovery_port=self._discovery_port,
            history=self._history,
        )
        self._nick = nick
        self._rooms: tuple[str, ...] = self._config.rooms
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = asyncio.Event()
        """Set (on the loop, by `close`) to end the loop's main coroutine."""
        self._handing = threading.Lock()
        """Orders handing a call to the loop against closing: a call handed over before
        `close` runs before the loop stops; none is handed over after."""
        self._taking_calls = False
        self._pending = 0
        """The chat's pending count, published by the loop after every call it runs and
        with every event, so that reading it waits for nothing."""
        self._active = 0
        """The chat's active peers, published with `_pending`."""
        self._queued: list[SendText] = []
        """Messages `send` numbered and the loop has not taken yet (guarded by `_handing`)."""
        self._wake_scheduled = False
        """The loop has been asked to take `_queued` and has not yet (guarded by `_handing`)."""
        self._next_message_id = 1
        self._taking = 0
        """Messages the loop is taking into the chat, not yet in its published count: so
        that `pending` never reads 0 while they cross (guarded by `_handing`)."""

    # -- ChatRuntime ----------------------------------------------------------

    @property
    def nick(self) -> str:
        return self._nick

    def open(self) -> None:
        """Start the loop's thread and open the chat on it; AddressError if binding fails."""
        if self._thread is not None:
            raise RuntimeError("an AsyncioRuntime can be opened once")
        loop = self._loop = asyncio.new_event_loop()
        opened: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(loop, opened), name="udpchat-asyncio", daemon=True
        )
        self._thread.start()
        try:
            opened.result(timeout=_START_TIMEOUT)
        except BaseException:
            self._stop_loop()  # if it did open: the thread ends once it has closed again
            self._thread.join(timeout=2 * _CLOSE_TIMEOUT)
            raise
        self._address = self._chat.local_address
        with self._handing:
            self._taking_calls = True

    def close(self) -> None:
        """Send BYE, stop the loop, join its thread and close the socket (well under 1 s)."""
        thread = self._thread
        with self._handing:
            if thread is None or self._closing:
                return
            self._closing = True
            self._taking_calls = False
            self._stop_loop()
        thread.join(timeout=2 * _CLOSE_TIMEOUT)
        self._outlet.shut()

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
        """Say `text` in `room` (by default our first room), or send it directly to the
        peers in `to`; return its id for the delivery events (see `ChatRuntime.send`).

        Raises MessageTooLong, NoPeers or OutboxFull (all LocalProtocolError) here, in the
        caller's thread. RuntimeError before `open` or after `close`. A message to the
        default room is checked against the loop's last published counts and queued
        without waiting; one with `to` or `room` waits for the loop, since only the chat
        knows its peers and their rooms.
        """
        encode_text(text)  # MessageTooLong at once, as in every model
        default = to is None and room is None and outboxed is None
        if default:
            self._check_room()
        with self._handing:
            if not self._taking_calls:
                raise RuntimeError("not open")
            stamp = base.wall_clock_ms() if sent_at_ms is None else sent_at_ms
            message = SendText(self._next_message_id, text, stamp, None, key=key)
            self._next_message_id += 1
            if default:
                self._queued.append(message)
                if not self._wake_scheduled:
                    self._wake_scheduled = True
                    assert self._loop is not None
                    self._loop.call_soon_threadsafe(self._take_queued)
                return message.message_id
        return self._call(
            lambda: self._chat.send(
                text,
                to,
                room=room,
                message_id=message.message_id,
                key=key,
                outboxed=outboxed,
                sent_at_ms=stamp,
            )
        )

    def cancel(self, message_id: int) -> bool:
        return self._call(lambda: self._chat.cancel(message_id))

    def join(self, room: str, key: bytes | None = None) -> str:
        joined = self._call(lambda: self._chat.join(room, key))
        self._rooms = self._ask(lambda: self._chat.rooms)
        return joined

    def leave(self, room: str) -> str:
        left = self._call(lambda: self._chat.leave(room))
        self._rooms = self._ask(lambda: self._chat.rooms)
        return left

    @property
    def rooms(self) -> tuple[str, ...]:
        return self._rooms

    def add_peer(self, addr: Address) -> None:
        self._call(lambda: self._chat.add_peer(addr))

    def add_raw_peer(self, addr: Address, encoding: str | None = None) -> None:
        self._call(lambda: self._chat.add_raw_peer(addr, encoding))

    def remove_peer(self, addr: Address) -> None:
        self._call(lambda: self._chat.remove_peer(addr))

    def set_nick(self, nick: str) -> None:
        """Change the nickname and announce it; ValueError if it is not 1-32 bytes."""
        self._call(lambda: self._chat.set_nick(nick))
        self._nick = nick

    def wait_delivered(self, timeout: float) -> bool:
        """Wait until every message sent so far is delivered or has failed."""
        with self._handing:
            if self._taking_calls:
                assert self._loop is not None
                waiting = self._chat.wait_delivered(timeout)
                answer = asyncio.run_coroutine_threadsafe(waiting, self._loop)
            else:
                answer = None
        if answer is None:
            return self._ask_stopped(self._chat.pending) == 0
        return answer.result()

    def pending(self) -> int:
        """Deliveries (message, peer) not yet acknowledged or failed: as of the last call
        the loop answered and the last event it reported, which is all that changes it,
        plus one for each message queued that the loop has not counted yet."""
        with self._handing:
            return self._pending + len(self._queued) + self._taking

    def stats(self) -> Stats:
        return self._ask(self._chat.stats)

    def peers(self) -> list[PeerStatus]:
        return self._ask(self._chat.peers)

    # -- handing calls to the loop --------------------------------------------

    def _check_room(self) -> None:
        """NoPeers or OutboxFull, as far as the loop's last published counts tell."""
        with self._handing:
            queued = len(self._queued) + self._taking
        base.check_room(
            active=self._active,
            pending=self._pending,
            queued=queued,
            max_pending=self._config.max_pending,
            active_now=lambda: self._call(self._chat.active_peers),
        )

    def _take_queued(self) -> None:
        """On the loop: take every message queued since the last wake-up, flush once."""
        with self._handing:
            batch, self._queued = self._queued, []
            self._wake_scheduled = False
            self._taking = len(batch)
        self._chat.send_queued(batch)
        with self._handing:
            self._published()
            self._taking = 0

    def _hand_over(self, function: Callable[[], _T]) -> concurrent.futures.Future[_T] | None:
        """Queue `function()` on the loop; its answer to come, or None when the loop takes
        no calls (before `open`, and from `close` on)."""
        with self._handing:
            if not self._taking_calls:
                return None
            assert self._loop is not None
            answer: concurrent.futures.Future[_T] = concurrent.futures.Future()
            self._loop.call_soon_threadsafe(self._answer, answer, function)
            return answer

    def _call(self, function: Callable[[], _T]) -> _T:
        """`function()` run on the loop; its result, or its exception raised, here."""
        answer = self._hand_over(function)
        if answer is None:
            raise RuntimeError("not open")
        return answer.result()

    def _ask(self, question: Callable[[], _T]) -> _T:
        """A question for the chat: on the loop while it runs, else directly."""
        answer = self._hand_over(question)
        return self._ask_stopped(question) if answer is None else answer.result()

    def _ask_stopped(self, question: Callable[[], _T]) -> _T:
        """A question for the chat when the loop takes no calls: before `open`, or during
        and after `close` (whose thread is then let finish first)."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2 * _CLOSE_TIMEOUT)
        return question()

    def _answer(self, answer: concurrent.futures.Future[_T], function: Callable[[], _T]) -> None:
        """On the loop: run a call handed over from another thread, hand back its outcome."""
        try:
            result = function()
        except BaseException as error:
            self._published()
            answer.set_exception(error)
        else:
            self._published()
            answer.set_result(result)

    def _on_chat_event(self, event: Event) -> None:
        """On the loop: the chat's on_event. Only a peer joining or leaving changes how
        many are active, so only then is that counted again (it costs a pass over them)."""
        if isinstance(event, PeerJoined | PeerLeft):
            self._published()
        else:
            self._pending = self._chat.pending()
        self._outlet(event)

    def _published(self) -> None:
        """On the loop: publish the counts `send` and `pending` read."""
        self._pending = self._chat.pending()
        self._active = self._chat.active_peers()

    def _stop_loop(self) -> None:
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass  # the loop is closed already: its thread has ended

    # -- the loop's thread ----------------------------------------------------

    def _run(
        self, loop: asyncio.AbstractEventLoop, opened: concurrent.futures.Future[None]
    ) -> None:
        try:
            loop.run_until_complete(self._main(opened))
        finally:
            loop.close()

    async def _main(self, opened: concurrent.futures.Future[None]) -> None:
        """The loop's life: open the chat, serve calls until `close`, close the chat."""
        try:
            await self._chat.open()
        except BaseException as error:
            opened.set_exception(error)
            return
        self._published()
        opened.set_result(None)
        await self._stop.wait()
        await self._chat.aclose()
        # Every call handed to the loop before `close` was queued before the stop, so it
        # has run; the wait_delivered among them were woken by aclose. Let them hand their
        # answers back before the loop stops.
        others = asyncio.all_tasks() - {asyncio.current_task()}
        await asyncio.gather(*others, return_exceptions=True)
