"""What of a chat goes into its history, under which conversation, and when
(docs/architecture.md, "History: the order of writes").

The store (`store.History`) keeps rows; this module decides what they are:
- a received message is stored before its acknowledgement leaves: the runtime's
  `Transmitter` calls `Inbox.store` with each flush's events before it sends the flush's
  datagrams (the ACKs), so a message acknowledged is a message on disk;
- a received message whose key this chat (its port) has stored already is a copy sent
  again (by a restarted sender, or to us after we were killed between storing it and
  acknowledging it): it is acknowledged, but neither stored nor shown again;
- a message the user sends, and for a direct message to a udpchat peer its outbox
  entry, are stored in one transaction before the runtime takes it (so before its first
  DATA); taken out again if the runtime refuses it; its outcome per recipient is stored
  when the runtime reports it, and a delivered or failed message leaves the outbox;
- at start, the chat sends again what the outbox holds (`Journal.outbox`);
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
from typing import TypeVar

from .protocol import (
    Address,
    DeliveryFailed,
    Event,
    HistoryFailed,
    MessageDelivered,
    MessageReceived,
    RawMessageSent,
)
from .store import History, HistoryError, OutboxEntry, Queued, Received, StoredMessage

T = TypeVar("T")


def address_text(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def conversation_of(room: str, peer: Address, nick: str) -> str:
    """The conversation a message belongs to, as history names it."""
    if room:
        return f"#{room}"
    return f"@{nick}" if nick else f"@{address_text(peer)}"


def received_rows(
    events: Sequence[Event], now_ms: int, chat_port: int | None = None
) -> list[Received]:
    """The messages among `events`, as rows of the history of the chat on `chat_port`."""
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
            key=event.key or None,
            chat_port=chat_port,
        )
        for event in events
        if isinstance(event, MessageReceived)
    ]


class Inbox:
    """The receiving side's writer: stores each flush's messages before its ACKs go.

    A runtime makes one where its receive half runs (in the process model, in the
    receiving process) and passes `store` as its `Transmitter`'s `before` step.
    """

    def __init__(
        self, path: Path, clock: Callable[[], float] = time.time, chat_port: int | None = None
    ) -> None:
        """`chat_port`: the UDP port of the chat receiving, which a message key is stored
        once for (None: no message is taken for a copy)."""
        self._path = path
        self._clock = clock
        self._chat_port = chat_port
        self._history: History | None = None
        """Opened at the first message; a `History` may be used from any thread (the
        thread model flushes from both of its threads)."""
        self._failed = False

    def store(self, events: list[Event]) -> None:
        """Write the messages among `events` in one transaction, and take out of `events`
        those the history holds already (copies sent again), so that the runtime hands
        on only the others; the ACKs go for all. On failure, history is off from now
        on, `events` are left whole and a `HistoryFailed` is appended to them, once."""
        if self._failed:
            return
        rows = received_rows(events, int(self._clock() * 1000), self._chat_port)
        if not rows:
            return
        try:
            if self._history is None:
                self._history = History.open(self._path, primary=False)
            stored = self._history.add_received(rows)
        except HistoryError as error:
            self._failed = True
            events.append(HistoryFailed(reason=str(error)))
            return
        if not all(stored):
            # `stored` follows the messages among `events`, in their order.
            flags = iter(stored)
            events[:] = [
                event for event in events if not isinstance(event, MessageReceived) or next(flags)
            ]

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
        self,
        conversation: str,
        nick: str,
        text: str,
        dialect: str = "udpchat",
        *,
        key: bytes | None = None,
        outbox: OutboxEntry | None = None,
    ) -> tuple[int | None, str | None]:
        """Store our message under its `key`, with its `outbox` entry if given, before
        the runtime takes it (pending until its outcomes come): (its row, for `bind` or
        `withdraw`, or None without history; the failure's reason if history just went
        off)."""
        at_ms = int(self._clock() * 1000)
        return self._write(
            lambda history: history.add_sent(
                conversation, nick, text, at_ms, dialect, key=key, outbox=outbox
            )
        )

    def bind(self, message_id: int, row: int) -> None:
        """The runtime took the message stored as `row` as its message `message_id`,
        which its outcome events name."""
        with self._lock:
            self._remember(message_id, row)

    def withdraw(self, row: int) -> str | None:
        """The runtime refused the message stored as `row` (none of it left): delete it,
        and its outbox entry. The failure's reason if history just went off."""
        return self._write(lambda history: history.withdraw(row))[1]

    def outcome(self, event: Event) -> str | None:
        """Store what became of one of our messages for one peer (a delivered or failed
        message leaves the outbox with it). The failure's reason if history just went
        off."""
        peer: Address | None
        if isinstance(event, MessageDelivered):
            state, peer = "delivered", event.peer
        elif isinstance(event, DeliveryFailed):
            state, peer = "failed", event.peer
        elif isinstance(event, RawMessageSent):
            state, peer = "sent", event.peer
        else:
            return None
        with self._lock:
            row = self._rows.get(event.message_id)
        if row is None:
            return None
        where = address_text(peer) if peer is not None else ""
        at_ms = int(self._clock() * 1000)
        return self._write(lambda history: history.set_delivery(row, where, state, at_ms))[1]

    def outbox(self) -> list[Queued]:
        """Our messages the outbox kept from earlier runs, oldest first, to hand to the
        runtime again at start ([] without history, or when unreadable)."""
        return self._read(lambda history: history.outbox())

    def instance_of(self, nick: str) -> bytes | None:
        """The installation of the udpchat peer known from earlier runs as `nick`, for a
        message to wait for it in the outbox; None when the history knows none."""
        with self._lock:
            if self.history is None:
                return None
            try:
                return self.history.instance_of(nick)
            except HistoryError:
                return None

    def recent(
        self, conversation: str, limit: int = 50, before: int | None = None
    ) -> list[StoredMessage]:
        """The conversation's last `limit` messages (before the row `before`, if given),
        oldest first ([] when unreadable)."""
        return self._read(lambda history: history.recent(conversation, limit, before))

    def search(self, text: str, limit: int = 100) -> list[StoredMessage]:
        """Messages holding `text`, newest first ([] when unreadable)."""
        return self._read(lambda history: history.search(text, limit))

    def _read(self, read: Callable[[History], list[T]]) -> list[T]:
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

    def _write(self, write: Callable[[History], T]) -> tuple[T | None, str | None]:
        """(What `write` returned, None), or (None, why) when it failed, which turns
        history off, or (None, None) when history is off already."""
        with self._lock:
            if self.history is None:
                return None, None
            try:
                return write(self.history), None
            except HistoryError as error:
                self.close()
                return None, str(error)


_ROWS_REMEMBERED = 100_000
"""Our messages whose outcome may still come (a run rarely sends this many)."""
