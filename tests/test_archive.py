"""What the chat writes to its history: received messages stored once per chat, even
when a sender sends them again after either side restarted, and our messages kept in
the outbox until they are delivered or fail (real files under tmp_path)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from udpchat.archive import Inbox, Journal
from udpchat.protocol import (
    DeliveryFailed,
    Event,
    HistoryFailed,
    MessageDelivered,
    MessageReceived,
    PeerJoined,
)
from udpchat.store import History, OutboxEntry

BOB = ("10.0.0.5", 9000)
BOB_INSTANCE = b"bob-inst"
CHAT_PORT = 7000


def message(text: str, n: int, room: str = "lobby") -> MessageReceived:
    """Bob's message number `n`: the same `n`, the same key, in every copy."""
    return MessageReceived(
        peer=BOB,
        nick="bob",
        text=text,
        sent_at_ms=1_000 + n,
        room=room,
        key=BOB_INSTANCE + n.to_bytes(8, "big"),
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "udpchat" / "history.sqlite3"


@pytest.fixture
def inbox(path: Path) -> Iterator[Inbox]:
    opened = Inbox(path, chat_port=CHAT_PORT)
    yield opened
    opened.close()


def stored_texts(path: Path) -> list[str]:
    with History.open(path, readonly=True) as history:
        return [stored.text for stored in history.select()]


def test_received_messages_are_stored_with_their_key_and_port(inbox: Inbox, path: Path) -> None:
    joined = PeerJoined(peer=BOB, nick="bob")
    events: list[Event] = [joined, message("hi", 1), message("still there?", 2)]
    inbox.store(events)
    assert events == [joined, message("hi", 1), message("still there?", 2)]
    assert stored_texts(path) == ["hi", "still there?"]


def test_a_message_sent_again_after_a_restart_is_not_handed_on(path: Path) -> None:
    """Stored, then killed before the ACK left: the sender sends it again to the
    restarted chat, which acknowledges it but shows it once."""
    first_run = Inbox(path, chat_port=CHAT_PORT)
    first_run.store([message("hi", 1)])
    first_run.close()
    restarted = Inbox(path, chat_port=CHAT_PORT)
    joined = PeerJoined(peer=BOB, nick="bob", restarted=True)
    events: list[Event] = [joined, message("hi", 1), message("new", 2)]
    restarted.store(events)
    restarted.close()
    assert events == [joined, message("new", 2)]
    assert stored_texts(path) == ["hi", "new"]


def test_copies_in_one_flush_are_handed_on_once(inbox: Inbox, path: Path) -> None:
    events: list[Event] = [message("hi", 1), message("hi", 1)]
    inbox.store(events)
    assert events == [message("hi", 1)]
    assert stored_texts(path) == ["hi"]


def test_another_chat_on_the_same_file_shows_its_own_copy(inbox: Inbox, path: Path) -> None:
    inbox.store([message("room line", 1)])
    other_chat = Inbox(path, chat_port=CHAT_PORT + 1)
    events: list[Event] = [message("room line", 1)]
    other_chat.store(events)
    other_chat.close()
    assert events == [message("room line", 1)]
    assert stored_texts(path) == ["room line", "room line"]


def test_messages_without_a_key_are_never_taken_for_copies(inbox: Inbox, path: Path) -> None:
    raw = MessageReceived(peer=BOB, nick="", text="plain", sent_at_ms=1, dialect="raw")
    for _ in range(2):
        events: list[Event] = [raw]
        inbox.store(events)
        assert events == [raw]
    assert stored_texts(path) == ["plain", "plain"]


def test_a_store_that_fails_keeps_every_event_and_says_so_once(path: Path) -> None:
    path.mkdir(parents=True)  # a folder where the file should be
    broken = Inbox(path, chat_port=CHAT_PORT)
    events: list[Event] = [message("hi", 1), message("hi", 1)]
    broken.store(events)
    assert events[:2] == [message("hi", 1), message("hi", 1)]
    [failed] = events[2:]
    assert isinstance(failed, HistoryFailed) and "cannot open history" in failed.reason
    later: list[Event] = [message("hi", 1)]
    broken.store(later)
    assert later == [message("hi", 1)]


@pytest.fixture
def journal(path: Path) -> Iterator[Journal]:
    opened = Journal(History.open(path), clock=lambda: 2.0)
    yield opened
    opened.close()


KEY = b"our-inst" + bytes(8)
ENTRY = OutboxEntry(BOB_INSTANCE, "bob", 60_000)


@pytest.mark.parametrize(
    "outcome",
    [
        MessageDelivered(message_id=1, peer=BOB, elapsed=0.1),
        DeliveryFailed(message_id=1, peer=BOB, elapsed=0.1, reason="peer away too long"),
    ],
)
def test_a_settled_message_leaves_the_outbox(journal: Journal, outcome: Event) -> None:
    row, failed = journal.sent("@bob", "me", "are you there?", key=KEY, outbox=ENTRY)
    assert row is not None and failed is None
    [queued] = journal.outbox()
    assert (queued.message, queued.key, queued.text, queued.sent_at_ms) == (
        row,
        KEY,
        "are you there?",
        2_000,
    )
    journal.bind(1, row)
    assert journal.outcome(outcome) is None
    assert journal.outbox() == []
    [stored] = journal.recent("@bob")
    assert stored.state == ("delivered" if isinstance(outcome, MessageDelivered) else "failed")


def test_an_outcome_of_a_message_never_bound_changes_nothing(journal: Journal) -> None:
    journal.sent("@bob", "me", "hi", key=KEY, outbox=ENTRY)
    journal.outcome(MessageDelivered(message_id=5, peer=BOB, elapsed=0.1))
    assert len(journal.outbox()) == 1


def test_a_message_the_runtime_refused_is_withdrawn(journal: Journal) -> None:
    row, _ = journal.sent("@bob", "me", "too long", key=KEY, outbox=ENTRY)
    assert row is not None
    assert journal.withdraw(row) is None
    assert journal.outbox() == []
    assert journal.recent("@bob") == []


def test_the_outbox_is_there_to_send_again_after_a_restart(path: Path) -> None:
    first_run = Journal(History.open(path))
    first, _ = first_run.sent("@bob", "me", "one", key=KEY, outbox=ENTRY)
    first_run.sent("#lobby", "me", "a room line waits for no one", key=b"our-inst" + b"\1" * 8)
    second, _ = first_run.sent("@bob", "me", "two", key=b"our-inst" + b"\2" * 8, outbox=ENTRY)
    first_run.close()
    restarted = Journal(History.open(path))
    assert [(queued.message, queued.text) for queued in restarted.outbox()] == [
        (first, "one"),
        (second, "two"),
    ]
    restarted.close()


def test_the_first_failing_write_turns_history_off_and_is_told_once(journal: Journal) -> None:
    history = journal.history
    assert history is not None and history._connection is not None
    pages = history._connection.execute("PRAGMA page_count").fetchone()[0]
    history._connection.execute(f"PRAGMA max_page_count = {pages}")
    row, failed = journal.sent("@bob", "me", "x" * 100_000, key=KEY, outbox=ENTRY)
    assert row is None and failed == "history not written: database or disk is full"
    assert journal.history is None
    assert journal.sent("@bob", "me", "hi", key=KEY, outbox=ENTRY) == (None, None)
    assert journal.withdraw(1) is None
    assert journal.outbox() == []
