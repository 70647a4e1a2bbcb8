"""The one interface every concurrency model implements, and the helpers they share.

The UI, the CLI, the benchmark and the tests see a runtime only through `ChatRuntime`.
A runtime owns one UDP socket and drives the sans-I/O core around it; it adds no
protocol logic of its own.

Events are pushed, not pulled: whoever makes a runtime passes an `on_event` callback
(`create_runtime(model, nick, ..., on_event=callback)`), and the runtime calls it with
every event: the core's, and `SendFailed` when the system refuses a datagram. The
contract of that callback:

- It is called on one of the runtime's own threads (the thread model's receiving or
  sending thread, the process model's thread that reads its children's pipes, the
  asyncio model's loop thread), never from inside a method the caller called.
- Calls never overlap, and events come in the order the core produced them (in the
  process model, in the order each half produced its own: the receive half's messages,
  peers and rejections, the send half's deliveries).
- It must return quickly and must not block: it runs where datagrams are received and
  acknowledged, so while it waits nothing is (and in the asyncio model the caller's calls
  wait too). Nor may it call the runtime back: hand the event on instead (a loop's
  `call_soon_threadsafe`, a queue, a print). Line mode's printer blocks only when
  nobody reads its output; `close` waits at most a second for a call under way.
- It is called only once the datagrams made in the same flush are on the wire, so a
  message the caller has seen is already acknowledged (the caller may close at once).
  The process model's receiving process is the exception: it hands a flush's events to
  the parent first and then sends its ACKs, so that nothing is acknowledged that the
  chat did not get; it finishes that flush before it heeds a close, so the caller may
  still close at once.
- It is never called after `close()` has returned.
"""

from __future__ import annotations

import dataclasses
import errno
import getpass
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, TypedDict

from ..protocol import (
    Address,
    Config,
    DeliveryFailed,
    Event,
    LocalProtocolError,
    NoPeers,
    Outboxed,
    OutboxFull,
    PeerStatus,
    SendFailed,
    Stats,
)
from .discovery import Discovery, ipmsg_broadcasts, open_discovery
from .sockets import bind_socket, normalize

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..archive import Inbox

EventCallback = Callable[[Event], None]
"""What a runtime calls with each event; see the contract above."""

CLOSED = object()
"""Put in a queue after the last item: whoever takes it knows that nothing more comes."""


class ChatRuntime(Protocol):
    """A chat endpoint: one UDP socket, the protocol core, and some concurrency around it.

    Use it as a context manager (or call `open` and `close`). All methods are safe to call
    from any one thread of the caller.
    """

    model: str
    """"thread", "process" or "asyncio"."""

    @property
    def local_address(self) -> Address:
        """The address the socket is bound to (the real port when 0 was asked)."""
        ...

    @property
    def nick(self) -> str: ...

    @property
    def discovery_port(self) -> int | None:
        """The UDP port where this chat announces itself and hears others, or None
        when it does not (docs/protocol.md, "Discovery")."""
        ...

    def open(self) -> None:
        """Bind the socket, start the workers, greet the configured peers."""
        ...

    def close(self) -> None:
        """Send BYE, stop every worker and close the socket; returns within about 1 s."""
        ...

    def __enter__(self) -> ChatRuntime: ...

    def __exit__(self, *exc_info: object) -> None: ...

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
        """Say `text` in `room` (by default the first room we are in: `rooms[0]`), or
        send it as a direct message to each peer in `to`; return its id for the delivery
        events (one `MessageDelivered` or `DeliveryFailed` per peer). A direct message
        to a udpchat peer that is away is held for it (`MessageHeld`), and goes when it
        is back.

        `key` is the message key when the caller stored the message under it before
        handing it over (else the core makes one); `outboxed` sends a message held in
        an earlier run's outbox to the installation it names, with its `sent_at_ms`
        (default: now).

        Every model refuses at once, by raising a LocalProtocolError, and then sends
        nothing and reports nothing more: MessageTooLong for a text over the protocol's
        limit; NoPeers when there is no peer to send to (nobody else in the room; with
        `to`, none of its addresses is a peer, configured or learned); OutboxFull when
        too many deliveries are pending. RuntimeError before `open` or after `close`.

        One race is left, in the process and asyncio models, whose `send` to the default
        room does not wait for the thread or process that owns the core: if the last
        member leaves (or the outbox fills) while the message is on its way there, it
        fails at once with a `DeliveryFailed` whose peer is None.
        """
        ...

    def join(self, room: str, key: bytes | None = None) -> str:
        """Join `room` and tell the peers; return its name as known (`#Dev` is `dev`).
        With `key` (a passphrase's master key, `crypto.derive_master_key`) the room is
        keyed: only holders of that key see its lines and us in it. InvalidRoom for a
        bad name; LocalProtocolError when in too many rooms."""
        ...

    def leave(self, room: str) -> str:
        """Leave `room` and tell the peers (LocalProtocolError if not in it)."""
        ...

    @property
    def rooms(self) -> tuple[str, ...]:
        """The rooms this chat is in, the default one first."""
        ...

    def add_peer(self, addr: Address) -> None: ...

    def add_raw_peer(self, addr: Address, encoding: str | None = None) -> None:
        """Chat with `addr` as a plain text peer (nc, socat, a network assistant), in
        `encoding` from now on (one of `plain.ENCODINGS`), or as guessed from what it
        sends. LocalProtocolError in shared-key mode; ValueError for another encoding."""
        ...

    def remove_peer(self, addr: Address) -> None: ...

    def set_nick(self, nick: str) -> None:
        """Change the nickname and announce it; ValueError if it is not 1-32 bytes."""
        ...

    def wait_delivered(self, timeout: float) -> bool:
        """Wait until every message sent so far is delivered or has failed: True then,
        False at the timeout. After `close`, at once: whether nothing is pending.
        Messages held for peers that are away are not waited for."""
        ...

    def cancel(self, message_id: int) -> bool:
        """Take a message held for a peer that is away out of the outbox: it fails
        ("cancelled") and True; False when none of that id is held (it is on the wire,
        delivered, or failed)."""
        ...

    def pending(self) -> int:
        """Deliveries (message, peer) not yet acknowledged or failed. Close settles none:
        after it, those that never were."""
        ...

    def stats(self) -> Stats: ...

    def peers(self) -> list[PeerStatus]: ...


class RuntimeOptions(TypedDict, total=False):
    """The keyword arguments of every runtime class and of `create_runtime` (defaults and
    meaning: `Endpoint`)."""

    bind: str
    port: int
    peers: Sequence[Address]
    config: Config | None
    on_event: EventCallback | None
    discovery_port: int | None
    history: Path | None


class Endpoint:
    """What every chat endpoint is given before it opens, and the address it then has."""

    def __init__(
        self,
        nick: str,
        *,
        bind: str = "0.0.0.0",
        port: int = 0,
        peers: Sequence[Address] = (),
        config: Config | None = None,
        on_event: EventCallback | None = None,
        discovery_port: int | None = None,
        history: Path | None = None,
    ) -> None:
        """Chat as `nick` (1-32 bytes) on a UDP socket bound to `bind`:`port` (0: any free
        port), greeting `peers` at `open`; `on_event` is called with every event (see the
        contract above; None: events are dropped). With `discovery_port`, listen for
        announcements there and announce this chat (docs/protocol.md, "Discovery");
        None: no discovery. With `history`, every message received is stored in that
        history file before it is acknowledged (`archive.Inbox`)."""
        self._config = config or Config()
        if self._config.ipmsg:
            self._config = _ipmsg_config(self._config, bind)
        self._bind, self._port, self._initial_peers = bind, port, list(peers)
        self._on_event = on_event
        self._discovery_port = discovery_port
        self._history = history
        self._discovery: Discovery | None = None
        self._address: Address | None = None

    @property
    def local_address(self) -> Address:
        """The address the socket is bound to (the real port when 0 was asked)."""
        if self._address is None:
            raise RuntimeError("not open")
        return self._address

    @property
    def discovery_port(self) -> int | None:
        return self._discovery_port

    def _bind_socket(self) -> socket.socket:
        """The socket, bound, and the discovery socket if asked for (AddressError with a
        one-line reason if either cannot be)."""
        sock = bind_socket(self._bind, self._port)
        if self._config.ipmsg:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if self._discovery_port is not None:
            try:
                self._discovery = open_discovery(sock, self._bind, self._discovery_port)
            except BaseException:
                sock.close()
                raise
        self._address = normalize(sock.getsockname())
        return sock

    @property
    def _announce_to(self) -> tuple[Address, ...]:
        return self._discovery.announce_to if self._discovery is not None else ()

    @property
    def _quiet(self) -> tuple[Address, ...]:
        """Where errors sending are not reported: the discovery and IPMsg broadcasts."""
        return quiet_addresses(self._announce_to, self._config)

    def _inbox(self) -> Inbox | None:
        """Where received messages are stored before their ACKs go, if anywhere."""
        if self._history is None:
            return None
        from ..archive import Inbox  # sqlite3 only for a chat that keeps history

        # Keyed by our port: a message shown once is not shown again by a restart of
        # this chat on its port, while another chat sharing the file shows its own copy.
        return Inbox(self._history, chat_port=self.local_address[1])

    def _close_discovery(self) -> None:
        if self._discovery is not None:
            self._discovery.close()


def _ipmsg_config(config: Config, bind: str) -> Config:
    """`config` with what IP Messenger packets carry filled in where the caller left the
    defaults: this machine's login and host names, and the broadcast addresses."""
    user = config.ipmsg_user
    if user == "udpchat":
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no login name (a container's unnamed uid)
            pass
    host = config.ipmsg_host
    if host == "udpchat":
        host = socket.gethostname() or host
    broadcast = config.ipmsg_broadcast or ipmsg_broadcasts(bind)
    return dataclasses.replace(config, ipmsg_user=user, ipmsg_host=host, ipmsg_broadcast=broadcast)


def quiet_addresses(announce_to: tuple[Address, ...], config: Config) -> tuple[Address, ...]:
    """The broadcast and group addresses whose send errors are the network's business."""
    return announce_to + config.ipmsg_broadcast


class RuntimeBase(Endpoint):
    """What the three runtime classes share: their arguments, their events' way out, and
    `with runtime:` to open and close them."""

    model: ClassVar[str]

    def __init__(self, nick: str, **options: Unpack[RuntimeOptions]) -> None:
        super().__init__(nick, **options)
        self._outlet = EventOutlet(self._on_event)
        self._closing = False

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> ChatRuntime:
        self.open()
        return self  # type: ignore[return-value]

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EventOutlet:
    """A runtime's way to its caller's `on_event`: one call at a time, none after `shut`.

    Without a callback (None) events are dropped: the caller did not ask for them.
    """

    def __init__(self, on_event: EventCallback | None) -> None:
        self._on_event = on_event
        self._lock = threading.Lock()
        self._open = on_event is not None

    def __call__(self, event: Event) -> None:
        self.publish((event,))

    def publish(self, events: Iterable[Event]) -> None:
        with self._lock:
            on_event = self._on_event
            for event in events:
                if not self._open:
                    return
                assert on_event is not None
                on_event(event)

    def shut(self, timeout: float = 1.0) -> None:
        """No call starts after this returns. One under way is waited for, but only for
        `timeout` seconds: line mode's printer, stuck on a pipe nobody reads, must not
        keep the chat from closing."""
        locked = self._lock.acquire(timeout=timeout)
        self._open = False
        if locked:
            self._lock.release()


# -- the flush ------------------------------------------------------------------


class Core(Protocol):
    """What a runtime drains after every input: a `ChatSession`, or one of its halves."""

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]: ...

    def next_event(self) -> Event | None: ...

    def get_timer(self) -> float | None: ...


@dataclass(slots=True)
class Flushed:
    """Everything one flush took from the core."""

    datagrams: list[tuple[bytes, Address]]
    """To put on the wire."""
    events: list[Event]
    """To hand on once the datagrams are out."""
    timer: float | None
    """When the core wants `handle_timer` next (None: never, until another input)."""


def flush(core: Core, now: float) -> Flushed:
    """Take what the core has for the wire and for the caller after an input. Call it
    under whatever guards the core; pass the result to a `Transmitter` outside of it."""
    datagrams = core.datagrams_to_send(now)
    events = []
    while (event := core.next_event()) is not None:
        events.append(event)
    return Flushed(datagrams, events, core.get_timer())


class Transmitter:
    """Where every flush goes, in the one order all models keep: the datagrams onto the
    wire, then the events onward. Events go last because a caller that has seen a message
    may close at once, and the ACK for that message must be out by then.

    A step that has to come before anything leaves (storing received messages before
    their ACKs go, outgoing ones before their first DATA) belongs at the top of
    `transmit`.
    """

    def __init__(
        self,
        send: Callable[[bytes, Address], object],
        publish: Callable[[list[Event]], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        quiet: Iterable[Address] = (),
        events_first: bool = False,
        before: Callable[[list[Event]], None] | None = None,
    ) -> None:
        """`send` puts one datagram on the wire (a socket's `sendto`); `publish` hands a
        flush's events on (to `on_event`, or to the process that calls it). Errors sending
        to a `quiet` address (discovery's group and broadcast) are not reported: a LAN
        without multicast or a route to it is the network's business, not the user's."""
        self._send = send
        self._publish = publish
        self._send_errors = SendErrors(clock)
        self._quiet = frozenset(quiet)
        self._events_first = events_first
        self._before = before
        """The step that comes before anything of a flush leaves: storing its received
        messages (`archive.Inbox.store`), so that nothing is acknowledged that is not
        on disk. It may add an event (HistoryFailed)."""

    def transmit(self, flushed: Flushed) -> None:
        """Send the flush's datagrams, then publish its events (and any SendFailed);
        with `events_first`, the events go first (see the process model's receiving
        process)."""
        events = flushed.events
        if self._before is not None and events:
            self._before(events)
        if self._events_first and events:
            self._publish(events)
            events = []
        for data, addr in flushed.datagrams:
            try:
                self._send(data, addr)
            except OSError as error:
                if addr in self._quiet:
                    continue
                failure = self._send_errors.failed(addr, error)
                if failure is not None:
                    events.append(failure)
        if events:
            self._publish(events)


class SendErrors:
    """The errors `sendto` raises, turned into `SendFailed` events a person can act on
    (a broadcast address, no route, a firewall), at most one per peer and error every
    `REPORT_INTERVAL` seconds, so that a dead route does not flood the screen.

    A full buffer (ENOBUFS, EAGAIN) stays silent: the datagram is lost as UDP may lose
    any, and retransmission covers DATA.
    """

    TRANSIENT = frozenset({errno.ENOBUFS, errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})
    REPORT_INTERVAL = 10.0
    _REMEMBERED = 256
    """Past this many (peer, error) pairs, those not reported for an interval are forgotten."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[tuple[Address, int | None], tuple[float, int]] = {}
        """(peer, errno) -> (when last reported, failures since then)."""

    def failed(self, addr: Address, error: OSError) -> SendFailed | None:
        """Count one datagram to `addr` that the OS refused; the event to report, if any."""
        if error.errno in self.TRANSIENT:
            return None
        now, key = self._clock(), (addr, error.errno)
        reported, count = self._seen.get(key, (now - self.REPORT_INTERVAL, 0))
        count += 1
        if now - reported < self.REPORT_INTERVAL:
            self._seen[key] = (reported, count)
            return None
        if len(self._seen) >= self._REMEMBERED:
            self._forget(now)
        self._seen[key] = (now, 0)
        return SendFailed(peer=addr, reason=error.strerror or str(error), count=count)

    def _forget(self, now: float) -> None:
        for key, (reported, _) in list(self._seen.items()):
            if now - reported >= self.REPORT_INTERVAL:
                del self._seen[key]


@dataclass(frozen=True, slots=True)
class SendText:
    """A message numbered by a caller that does not wait for the core to take it (the
    process model's parent, the asyncio model's caller). A refusal comes back as a
    `DeliveryFailed` (see `refused`)."""

    message_id: int
    text: str
    sent_at_ms: int
    to: list[Address] | None
    room: str | None = None
    key: bytes | None = None
    """The message key, when the caller stored the message under it first."""
    outboxed: Outboxed | None = None
    """For a message from the outbox of an earlier run: whom it is for."""

    def __reduce__(self) -> tuple[type[SendText], tuple[object, ...]]:
        # Class and fields, as a tuple would pickle: one crosses the process model's pipe
        # per message, and a slotted dataclass's default pickling costs about twice as much.
        return SendText, (
            self.message_id,
            self.text,
            self.sent_at_ms,
            self.to,
            self.room,
            self.key,
            self.outboxed,
        )


class Outbox(Protocol):
    """What takes a numbered message: a `ChatSession`, or its send half."""

    def send_message(
        self,
        text: str,
        now: float,
        *,
        sent_at_ms: int,
        to: list[Address] | None = None,
        room: str | None = None,
        message_id: int | None = None,
        key: bytes | None = None,
        outboxed: Outboxed | None = None,
    ) -> int: ...


def check_room(
    *, active: int, pending: int, queued: int, max_pending: int, active_now: Callable[[], int]
) -> None:
    """For a `send` to every peer whose caller does not own the core (the process model's
    parent, the asyncio model's caller): NoPeers or OutboxFull, as far as the counts the
    core last published tell. `queued` messages were handed over and are not counted in
    `pending` yet; each will go to every `active` peer. The counts can lag (a PeerJoined
    may be seen before its count is published), so only a "no peers" is worth confirming
    with `active_now()`, a round trip to the core. The core checks again when it takes
    the message, and a refusal then is a `DeliveryFailed` (see `refused`)."""
    if active == 0 and not active_now():
        raise NoPeers("no peer to send to")
    if pending + queued * active >= max_pending:
        raise OutboxFull(f"outbox full: {pending} messages are waiting for delivery")


def queue_message(outbox: Outbox, message: SendText, now: float) -> LocalProtocolError | None:
    """Hand one numbered message to the core; the error if it cannot take it."""
    try:
        outbox.send_message(
            message.text,
            now,
            sent_at_ms=message.sent_at_ms,
            to=message.to,
            room=message.room,
            message_id=message.message_id,
            key=message.key,
            outboxed=message.outboxed,
        )
    except (LocalProtocolError, ValueError) as error:
        if isinstance(error, ValueError):  # a malformed key or outbox entry
            return LocalProtocolError(str(error))
        return error
    return None


def refused(message: SendText, error: LocalProtocolError) -> DeliveryFailed:
    """The event for a message its caller did not wait for, and the core refused."""
    return DeliveryFailed(message_id=message.message_id, peer=None, elapsed=0.0, reason=str(error))


def as_targets(to: Sequence[Address] | None) -> list[Address] | None:
    """`send`'s `to` as the core takes it."""
    return None if to is None else list(to)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def wall_offset() -> float:
    """Wall-clock time minus monotonic time: the core's `wall_offset` (shared-key mode)."""
    return time.time() - time.monotonic()
