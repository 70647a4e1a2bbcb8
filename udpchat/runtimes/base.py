"""The one interface every concurrency model implements, and the helpers they share.

The UI, the CLI, the benchmark and the tests see a runtime only through `ChatRuntime`.
A runtime owns one UDP socket and drives the sans-I/O core around it; it adds no
protocol logic of its own.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..protocol import Address, Event, PeerStatus, Stats


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
