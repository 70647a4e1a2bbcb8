"""What of a chat goes into its history, under which conversation, and when
(docs/architecture.md, "History: the order of writes").

The store (`store.History`) keeps rows; this module decides what they are:
- a received message is stored before its acknowledgement leaves: the runtime's
  `Transmitter` calls `Inbox.store` with each flush's events before it sends the flush's
  datagrams (the ACKs), so a message acknowledged is a message on disk;
- a message the user sends is stored before it is handed to the runtime (so before its
  first DATA), and its outcome per recipient when the runtime reports it;
- a direct conversation is named by the peer's nickname (`@bob`), or by its address
  when it has none (a raw peer, `@10.0.0.5:8080`); a room by `#name`.
When the store fails (a full disk, a file gone read-only), history stops for the rest of
the run and the chat goes on: the failure is reported once, as a `HistoryFailed` event,
and from then on "delivered" means handed to the application, as with `--no-history`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .protocol import (
    Address,
    DeliveryFailed,
    Event,
    HistoryFailed,
    MessageDelivered,
    MessageReceived,
    RawMessageSent,
)
from .store import History, HistoryError, Received, StoredMessage


def address_text(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def conversation_of(room: str, peer: Address, nick: str) -> str:
    """The conversation a message belongs to, as history names it."""
    if room:
        return f"#{room}"
    return f"@{nick}" if nick else f"@{address_text(peer)}"


def received_rows(events: Sequence[Event], now_ms: int) -> list[Received]:
    """The messages among `events`, as rows of the history."""
    return [
        Received(
            conversation=conversation_of(
                event.room, event.peer, "" if event.dialect == "raw" else event.nick
            ),
            peer=address_text(event.peer),
            nick=event.nick,
            text=event.text,
            sent_at_ms=event.sent_at_ms,
            received_at_ms=now_ms,
            dialect=event.dialect,
        )
        for event in events
        if isinstance(event, MessageReceived)
    ]


class Inbox:
    """The receiving side's writer: stores each flush's messages before its ACKs go.

    A runtime makes one where its receive half runs (in the process model, in the
    receiving process) and passes `store` as its `Transmitter`'s `before` step.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._clock = clock
        self._history: History | None = None
        """Opened at the first message; a `History` may be used from any thread (the
        thread model flushes from both of its threads)."""
        self._failed = False

    def store(self, events: list[Event]) -> None:
        """Write the messages among `events` in one transaction. On failure, history is
        off from now on and a `HistoryFailed` is appended to `events`, once."""
        if self._failed:
            return
        rows = received_rows(events, int(self._clock() * 1000))
        if not rows:
            return
        try:
            if self._history is None:
                self._history = History.open(self._path, primary=False)
            self._history.add_received(rows)
        except HistoryError as error:
            self._failed = True
            events.append(HistoryFailed(reason=str(error)))

    def close(self) -> None:
        """Close the connection (once the runtime's threads have stopped)."""
        if self._history is not None:
            self._history.close()
            self._history = None


class Journal:
    """The user interface's side of the history: its own messages and their outcomes,
    what each conversation said before this run, and search.

    Every write that fails turns history off for the rest of the run; the first failure
    is returned (as its reason) by the call that met it, for the UI to show once.
    """

    def __init__(self, history: History, clock: Callable[[], float] = time.time) -> None:
        self.history: History | None = history
        self._clock = clock
        self._lock = threading.RLock()
        """Line mode writes from its input thread (our messages) and from the runtime's
        (their outcomes): one connection, one writer at a time."""
        self._rows: dict[int, int] = {}
        """The runtime's message id -> its row in the history."""

    def sent(
        self, message_id: int, conversation: str, nick: str, text: str, dialect: str = "udpchat"
    ) -> str | None:
        """The runtime took our message `message_id`: store it (pending until its
        outcomes come). The failure's reason if history just went off."""
        return self._write(
            lambda history: self._remember(
                message_id,
                history.add_sent(conversation, nick, text, int(self._clock() * 1000), dialect),
            )
        )

    def outcome(self, event: Event) -> str | None:
        """Store what became of one of our messages for one peer."""
        peer: Address | None
        if isinstance(event, MessageDelivered):
            state, peer = "delivered", event.peer
        elif isinstance(event, DeliveryFailed):
            state, peer = "failed", event.peer
        elif isinstance(event, RawMessageSent):
            state, peer = "sent", event.peer
        else:
            return None
        row = self._rows.get(event.message_id)
        if row is None:
            return None
        where = address_text(peer) if peer is not None else ""
        at_ms = int(self._clock() * 1000)
        return self._write(lambda history: history.set_delivery(row, where, state, at_ms))

    def recent(
        self, conversation: str, limit: int = 50, before: int | None = None
    ) -> list[StoredMessage]:
        """The conversation's last `limit` messages (before the row `before`, if given),
        oldest first ([] when unreadable)."""
        return self._read(lambda history: history.recent(conversation, limit, before))

    def search(self, text: str, limit: int = 100) -> list[StoredMessage]:
        """Messages holding `text`, newest first ([] when unreadable)."""
        return self._read(lambda history: history.search(text, limit))

    def _read(self, read: Callable[[History], list[StoredMessage]]) -> list[StoredMessage]:
        with self._lock:
            if self.history is None:
                return []
            try:
                return read(self.history)
            except HistoryError:
                return []

    def close(self) -> None:
        with self._lock:
            if self.history is not None:
                self.history.close()
                self.history = None

    def _remember(self, message_id: int, row: int) -> None:
        self._rows[message_id] = row
        if len(self._rows) > _ROWS_REMEMBERED:
            del self._rows[next(iter(self._rows))]

    def _write(self, write: Callable[[History], object]) -> str | None:
        with self._lock:
            if self.history is None:
                return None
            try:
                write(self.history)
            except HistoryError as error:
                self.close()
                return str(error)
            return None


_ROWS_REMEMBERED = 100_000
"""Our messages whose outcome may still come (a run rarely sends this many)."""
