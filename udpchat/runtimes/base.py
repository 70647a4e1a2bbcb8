"""The one interface every concurrency model implements, and the socket helpers they share.

The UI, the CLI, the benchmark and the tests see a runtime only through `ChatRuntime`.
A runtime owns one UDP socket and drives the sans-I/O core around it; it adds no
protocol logic of its own.
"""

from __future__ import annotations

import errno
import ipaddress
import queue
import socket
import time
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..protocol import Address, Event, PeerStatus, Stats

DEFAULT_PORT = 9000
RECEIVE_BUFFER = 64 * 1024
"""Largest datagram we read; bigger than any valid one (1,200 bytes), so none is cut."""
SOCKET_BUFFER = 1 << 20
"""Kernel buffer we ask for, so a burst is not dropped while the receiver is busy."""


class AddressError(ValueError):
    """A peer or bind address that cannot be used; the message is one line for the user."""


@runtime_checkable
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

    def open(self) -> None:
        """Bind the socket, start the workers, greet the configured peers."""
        ...

    def close(self) -> None:
        """Send BYE, stop every worker and close the socket; returns within about 1 s."""
        ...

    def __enter__(self) -> ChatRuntime: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def send(self, text: str, to: Sequence[Address] | None = None) -> int:
        """Send a message to every active peer, or only to those in `to`; return its id
        for the delivery events.

        Raises MessageTooLong, NoPeers or OutboxFull (all LocalProtocolError), and
        RuntimeError before `open` or after `close`.
        """
        ...

    def add_peer(self, addr: Address) -> None: ...

    def remove_peer(self, addr: Address) -> None: ...

    def set_nick(self, nick: str) -> None:
        """Change the nickname and announce it; ValueError if it is not 1-32 bytes."""
        ...

    def get_event(self, timeout: float | None = None) -> Event | None:
        """The next event, waiting up to `timeout` seconds (None: forever).

        None on timeout, and at once when the runtime is closed and no event is left.
        """
        ...

    def wait_delivered(self, timeout: float) -> bool:
        """Wait until every message sent so far is delivered or has failed."""
        ...

    def pending(self) -> int:
        """Deliveries (message, peer) not yet acknowledged or failed."""
        ...

    def stats(self) -> Stats: ...

    def peers(self) -> list[PeerStatus]: ...


DRAIN = 64
"""Datagrams a runtime reads per wake-up before it flushes the core, so that a burst is
answered with one ACK per peer rather than one per datagram."""


def read_queued(sock: socket.socket, batch: list[tuple[bytes, Address]]) -> None:
    """Append to `batch` what is already queued in the socket, up to DRAIN datagrams in
    all, without blocking (whatever the socket's own blocking mode)."""
    while len(batch) < DRAIN:
        try:
            data, addr = sock.recvfrom(RECEIVE_BUFFER, socket.MSG_DONTWAIT)
        except OSError:
            # Nothing more queued (BlockingIOError), or an error the next blocking read
            # meets and handles.
            return
        batch.append((data, normalize(addr)))


class EventQueue:
    """Events on their way from a runtime's workers to its caller, from any thread.

    `get` waits without polling, and once `close` has been called it returns None at
    once, for every waiter, as soon as the events already queued are taken.
    """

    _CLOSED = object()

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()

    def put(self, event: Event) -> None:
        self._queue.put(event)

    def close(self) -> None:
        self._queue.put(self._CLOSED)

    def get(self, timeout: float | None = None) -> Event | None:
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is self._CLOSED:
            self._queue.put(item)  # for the next waiter
            return None
        return item  # type: ignore[return-value]


class RuntimeContext:
    """`with runtime:` opens it and closes it, for every model."""

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> ChatRuntime:
        self.open()
        return self  # type: ignore[return-value]

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def wall_offset() -> float:
    """Wall-clock time minus monotonic time: the core's `wall_offset` (shared-key mode)."""
    return time.time() - time.monotonic()


def normalize(addr: tuple[object, ...]) -> Address:
    """(host, port) from what recvfrom returns (IPv6 adds flow info and scope id)."""
    host, port = addr[0], addr[1]
    assert isinstance(host, str) and isinstance(port, int)
    return (host, port)


def family_of(bind: str) -> socket.AddressFamily:
    try:
        version = ipaddress.ip_address(bind.split("%")[0]).version
    except ValueError:
        raise AddressError(f"--bind needs a numeric IP address, not {bind!r}") from None
    return socket.AF_INET6 if version == 6 else socket.AF_INET


def bind_socket(bind: str, port: int) -> socket.socket:
    """A UDP socket bound to (bind, port), with large kernel buffers.

    Raises AddressError with a one-line explanation when the port is taken or the address
    does not belong to this machine.
    """
    family = family_of(bind)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        sock.bind((bind, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise AddressError(
                f"UDP port {port} on {bind} is already in use; choose another with --port"
            ) from None
        if error.errno == errno.EADDRNOTAVAIL:
            raise AddressError(f"{bind} is not an address of this machine (--bind)") from None
        if error.errno == errno.EACCES:
            raise AddressError(
                f"not allowed to bind UDP port {port}; use --port 1024 or above"
            ) from None
        raise AddressError(f"cannot bind {bind} port {port}: {error.strerror}") from None
    return sock


def parse_port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise AddressError(f"port must be a number from 0 to 65535, not {text!r}")
    return int(text)


def resolve_peer(
    text: str, family: socket.AddressFamily, default_port: int = DEFAULT_PORT
) -> Address:
    """Turn "HOST", "HOST:PORT", "[V6]:PORT" or a bare IPv6 address into an address of
    `family`. Raises AddressError with a one-line reason."""
    text = text.strip()
    host, port = text, default_port
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or (close + 1 < len(text) and text[close + 1] != ":"):
            raise AddressError(f"malformed peer address {text!r}; use [IPv6]:PORT")
        host = text[1:close]
        if close + 1 < len(text):
            port = parse_port(text[close + 2 :])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = parse_port(port_text)
    if not host:
        raise AddressError(f"malformed peer address {text!r}; use HOST or HOST:PORT")
    if port == 0:
        raise AddressError(f"peer port must be 1 to 65535 in {text!r}")
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
    except socket.gaierror:
        other = socket.AF_INET if family == socket.AF_INET6 else socket.AF_INET6
        try:
            socket.getaddrinfo(host, port, other, socket.SOCK_DGRAM)
        except socket.gaierror:
            raise AddressError(f"unknown host {host!r}") from None
        hint = "--bind ::" if other == socket.AF_INET6 else "--bind 0.0.0.0"
        raise AddressError(f"{host} has no address of the socket's family; try {hint}") from None
    return normalize(infos[0][4])
