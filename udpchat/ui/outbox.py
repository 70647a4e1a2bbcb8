"""What both user interfaces do with the history when they send, and with the offline
outbox (docs/architecture.md, "History: the order of writes").

- A message is stored before the runtime takes it, under the key it will carry on the
  wire; a direct message to a udpchat peer also gets its outbox entry then, so a chat
  killed at any moment after that sends it again when it next runs. A message the
  runtime refuses is taken back out.
- At start, what the outbox holds is handed to the runtime again, for the installation
  each entry names: the core holds it until that peer is present (`MessageHeld`).
- `Queue` is what `/queue` lists and `/cancel N` takes from: the messages held for peers
  that are away, as the runtime's events tell.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..archive import Journal
from ..protocol import (
    Address,
    DeliveryFailed,
    Event,
    MessageDelivered,
    MessageHeld,
    Outboxed,
    PeerStatus,
)
from ..runtimes import ChatRuntime
from ..store import OutboxEntry, Queued
from .format import escape, span

NO_INSTANCE = bytes(8)


@dataclass(frozen=True, slots=True)
class Sent:
    """A message the runtime took."""

    message_id: int
    history_failed: str | None
    """Why the history just went off (storing this message failed), else None."""


class Outbox:
    """Hands our messages to the runtime, storing each first when there is a history."""

    def __init__(self, journal: Journal | None, instance: bytes, keep: float) -> None:
        """`instance`: this installation's id, the first half of every message key;
        `keep`: how long a direct message may wait for its peer (`Config.keep`)."""
        self.journal = journal
        self._instance = instance
        self._keep = keep

    @property
    def keeps(self) -> bool:
        """Whether what waits for peers that are away outlives this run (on disk)."""
        return self.journal is not None and self.journal.history is not None

    def send(
        self,
        runtime: ChatRuntime,
        text: str,
        *,
        to: Address | None,
        room: str | None,
        conversation: str,
        nick: str,
        dialect: str,
        recipient: PeerStatus | None = None,
    ) -> Sent:
        """Store `text` (said by `nick` in `conversation`), then hand it to `runtime`:
        to the peer `to` (whose row is `recipient`), else in `room` (None: the default
        room, the runtimes' fast path). Raises what `runtime.send` raises, with nothing
        left stored."""
        journal = self.journal
        if journal is None or journal.history is None:
            return Sent(_hand_over(runtime, text, to, room, None), None)
        entry = None
        if recipient is not None and recipient.dialect == "udpchat" and recipient.instance:
            entry = self._entry(recipient.instance, recipient.nick)
        return self._stored(
            runtime,
            journal,
            (conversation, nick, text, dialect),
            entry,
            lambda key: _hand_over(runtime, text, to, room, key),
        )

    def send_to_known(
        self, runtime: ChatRuntime, text: str, *, nick: str, peer_nick: str
    ) -> Sent | str | None:
        """`/msg peer_nick text` to a udpchat peer not here in this run but known to the
        history (its installation, from the keys of its messages): stored with its outbox
        entry, then handed to the runtime, which holds it until that peer is here. None
        when the history knows no one so named; a one-line reason when this chat keeps
        nothing for later (`keep` 0). Raises what `runtime.send` raises."""
        journal = self.journal
        instance = journal.instance_of(peer_nick) if journal is not None else None
        if journal is None or instance is None:
            return None
        entry = self._entry(instance, peer_nick)
        if entry is None:
            return f"{escape(peer_nick)} is not here, and --keep 0 keeps nothing"
        outboxed = Outboxed(instance, peer_nick, entry.expires_at_ms)
        return self._stored(
            runtime,
            journal,
            (f"@{peer_nick}", nick, text, "udpchat"),
            entry,
            lambda key: runtime.send(text, key=key, outboxed=outboxed),
        )

    def _entry(self, instance: bytes, peer_nick: str) -> OutboxEntry | None:
        """The outbox entry of a direct message to that installation (None: `keep` 0)."""
        if self._keep <= 0:
            return None
        return OutboxEntry(instance, peer_nick, int((time.time() + self._keep) * 1000))

    def _stored(
        self,
        runtime: ChatRuntime,
        journal: Journal,
        row: tuple[str, str, str, str],
        entry: OutboxEntry | None,
        hand_over: Callable[[bytes], int],
    ) -> Sent:
        """Store the message (`row`: conversation, nick, text, dialect) and its outbox
        `entry` under a new key, then `hand_over` it to the runtime under that key; take
        it out again if the runtime refuses it."""
        key = self._instance + os.urandom(8)
        conversation, nick, text, dialect = row
        stored, failed = journal.sent(conversation, nick, text, dialect, key=key, outbox=entry)
        try:
            message_id = hand_over(key)
        except BaseException:
            if stored is not None:
                journal.withdraw(stored)
            raise
        if stored is not None:
            journal.bind(message_id, stored)
        return Sent(message_id, failed)

    def resend(self, runtime: ChatRuntime) -> list[tuple[int, Queued]]:
        """Hand the runtime what the outbox holds from earlier runs; (message id, entry)
        of each. Only the chat that holds the history first does this: a second one on
        the same file (`History.shared`) leaves them to it."""
        journal = self.journal
        if journal is None or journal.history is None or journal.history.shared:
            return []
        sent = []
        for queued in journal.outbox():
            outboxed = Outboxed(queued.instance, queued.peer_nick, queued.expires_at_ms)
            message_id = runtime.send(
                queued.text, key=queued.key, outboxed=outboxed, sent_at_ms=queued.sent_at_ms
            )
            journal.bind(message_id, queued.message)
            sent.append((message_id, queued))
        return sent


def _hand_over(
    runtime: ChatRuntime, text: str, to: Address | None, room: str | None, key: bytes | None
) -> int:
    if to is not None:
        return runtime.send(text, to=[to], key=key)
    if room is not None:
        return runtime.send(text, room=room, key=key)
    if key is None:
        return runtime.send(text)  # the default room: the runtimes' fast path
    return runtime.send(text, key=key)


@dataclass(slots=True)
class _Queued:
    held: MessageHeld
    text: str
    since: float


class Queue:
    """The messages held for peers that are away, oldest first, numbered 1, 2, ... for
    `/queue` and `/cancel N`."""

    def __init__(self) -> None:
        self._held: OrderedDict[int, _Queued] = OrderedDict()

    def see(self, event: Event, text: str = "") -> None:
        """Follow the runtime's events: `MessageHeld` adds a message (its `text`), its
        delivery or failure takes it out."""
        if isinstance(event, MessageHeld):
            self._held[event.message_id] = _Queued(event, text, time.monotonic())
        elif isinstance(event, MessageDelivered | DeliveryFailed):
            self._held.pop(event.message_id, None)

    def __len__(self) -> int:
        return len(self._held)

    def farewell(self, kept: bool) -> str | None:
        """What to say of the messages still waiting when the chat quits (None: there
        are none): that they go at the next run (`kept` on disk), or are lost."""
        count = len(self._held)
        if not count:
            return None
        many = "1 message waits" if count == 1 else f"{count} messages wait"
        it, goes, does = ("it", "goes", "is") if count == 1 else ("they", "go", "are")
        if kept:
            return f"{many} for peers that are away; {it} {goes} when udpchat next runs"
        return f"{many} for peers that are away, and {does} lost: no history keeps {it}"

    def message_id(self, argument: str) -> int | str:
        """The runtime's id of the message `/cancel N` names, or a one-line reason."""
        number = argument.strip()
        if not number.isdigit() or not 1 <= int(number) <= len(self._held):
            if not self._held:
                return "nothing is queued"
            return f"usage: /cancel N, where N is a number /queue lists (1 to {len(self._held)})"
        return list(self._held)[int(number) - 1]

    def records(self) -> list[dict[str, object]]:
        """`/queue` for scripts: one object per held message."""
        now = time.monotonic()
        return [
            {
                "number": number,
                "message_id": message_id,
                "to": queued.held.nick,
                "text": queued.text,
                "reason": queued.held.reason,
                "expires_in": round(max(0.0, queued.held.expires_in - (now - queued.since)), 3),
            }
            for number, (message_id, queued) in enumerate(self._held.items(), 1)
        ]

    def lines(self) -> list[str]:
        """`/queue`: one line per held message."""
        if not self._held:
            return ["nothing is queued: every message sent has been delivered or has failed"]
        now = time.monotonic()
        lines = [f"{len(self._held)} queued (/cancel N takes one back):"]
        for number, queued in enumerate(self._held.values(), 1):
            held = queued.held
            left = max(0.0, held.expires_in - (now - queued.since))
            text = queued.text if len(queued.text) <= 40 else queued.text[:39] + "…"
            lines.append(
                f"  {number}. to {held.nick or '?'}: {text!r} — {held.reason};"
                f" kept {span(left)} more"
            )
        return lines
