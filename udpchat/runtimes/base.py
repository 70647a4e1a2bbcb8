"""The one interface every concurrency model implements, and the helpers they share.

The UI, the CLI, the benchmark and the tests see a runtime only through `ChatRuntime`.
A runtime owns one UDP socket and drives the sans-I/O core around it; it adds no
protocol logic of its own.

Events are pushed, not pulled: whoever makes a runtime passes an `on_event` callback
(`create_runtime(model, nick, ..., on_event=callback)`), and the runtime calls it with
every event the core produces. The contract of that callback:

- It is called on one of the runtime's own threads (the thread model's receiving or
  sending thread, the process model's thread that reads its children's pipes, the
  asyncio model's loop thread), never from inside a method the caller called.
- Calls never overlap, and events come in the order the core produced them (in the
  process model, in the order each half produced its own: the receive half's messages,
  peers and rejections, the send half's deliveries).
- It must return quickly and must not block: it runs where datagrams are received and
  acknowledged. Nor may it call the runtime back: hand the event on instead (a loop's
  `call_soon_threadsafe`, a queue, a print).
- It is called only once the datagrams made in the same flush are on the wire, so a
  message the caller has seen is already acknowledged (the caller may close at once).
- It is never called after `close()` has returned.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

from ..protocol import Address, Event, PeerStatus, Stats

EventCallback = Callable[[Event], None]
"""What a runtime calls with each event; see the contract above."""


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

    def wait_delivered(self, timeout: float) -> bool:
        """Wait until every message sent so far is delivered or has failed."""
        ...

    def pending(self) -> int:
        """Deliveries (message, peer) not yet acknowledged or failed."""
        ...

    def stats(self) -> Stats: ...

    def peers(self) -> list[PeerStatus]: ...


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
            if self._open:
                on_event = self._on_event
                assert on_event is not None
                for event in events:
                    on_event(event)

    def shut(self) -> None:
        """No call after this returns (one under way is waited for)."""
        with self._lock:
            self._open = False


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
