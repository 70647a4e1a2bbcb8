"""The history store: round trips, paging, search, filters, and every file it must
refuse without changing it (conftest points $XDG_DATA_HOME at a temporary folder)."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from udpchat import store
from udpchat.store import (
    History,
    HistoryError,
    NoHistoryYet,
    OutboxEntry,
    Queued,
    Received,
    StoredMessage,
)

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ROOT_SKIP = "root bypasses file permissions, so a read-only file or folder stays writable"


def received(
    text: str,
    conversation: str = "#lobby",
    nick: str = "bob",
    at_ms: int = 1_000,
    peer: str = "10.0.0.5:9000",
    dialect: str = "udpchat",
    key: bytes | None = None,
    chat_port: int | None = 9000,
) -> Received:
    return Received(conversation, peer, nick, text, at_ms, at_ms + 5, dialect, key, chat_port)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "udpchat" / "history.sqlite3"


@pytest.fixture
def history(path: Path) -> Iterator[History]:
    with History.open(path) as opened:
        yield opened


def texts(messages: list[StoredMessage]) -> list[str]:
    return [message.text for message in messages]


def test_default_path_is_under_xdg_data_home(tmp_path: Path) -> None:
    assert store.default_path({"XDG_DATA_HOME": str(tmp_path)}) == (
        tmp_path / "udpchat" / "history.sqlite3"
    )
    home = Path(os.path.expanduser("~"))
    assert store.default_path({"XDG_DATA_HOME": "relative"}) == (
        home / ".local" / "share" / "udpchat" / "history.sqlite3"
    )


def test_received_messages_come_back_as_stored(history: History) -> None:
    history.add_received(
        [
            received("hello", at_ms=10),
            received("hi there", "@10.0.0.9:8080", "", 20, "10.0.0.9:8080", "raw"),
        ]
    )
    [lobby] = history.recent("#lobby")
    assert lobby == StoredMessage(
        id=lobby.id,
        conversation="#lobby",
        direction="in",
        peer="10.0.0.5:9000",
        nick="bob",
        text="hello",
        sent_at_ms=10,
        received_at_ms=15,
        dialect="udpchat",
        state="shown",
    )
    [raw] = history.recent("@10.0.0.9:8080")
    assert (raw.nick, raw.dialect, raw.peer) == ("", "raw", "10.0.0.9:8080")
    assert history.count() == 2


def test_a_failing_batch_stores_none_of_its_messages(history: History) -> None:
    bad = Received("#lobby", "10.0.0.5:9000", "bob", None, 1, 2, "udpchat")  # type: ignore[arg-type]
    with pytest.raises(HistoryError, match=r"^history not written: "):
        history.add_received([received("first"), bad])
    assert history.count() == 0


@pytest.mark.parametrize(
    ("outcomes", "state"),
    [
        ([], "pending"),
        ([("a", "pending")], "pending"),
        ([("a", "delivered")], "delivered"),
        ([("a", "delivered"), ("b", "delivered")], "delivered"),
        ([("a", "delivered"), ("b", "pending")], "pending"),
        ([("a", "failed")], "failed"),
        ([("a", "failed"), ("b", "pending")], "failed"),
        ([("a", "delivered"), ("b", "failed")], "partly delivered"),
        ([("a", "sent")], "sent"),
        ([("a", "sent"), ("b", "delivered")], "delivered"),
        ([("a", "pending"), ("a", "delivered")], "delivered"),  # the later outcome wins
    ],
)
def test_a_sent_message_takes_its_state_from_its_deliveries(
    history: History, outcomes: list[tuple[str, str]], state: str
) -> None:
    row = history.add_sent("#lobby", "me", "hello all", 1_000)
    for at_ms, (peer, outcome) in enumerate(outcomes):
        history.set_delivery(row, f"10.0.0.{ord(peer)}:9000", outcome, 2_000 + at_ms)
    [sent] = history.recent("#lobby")
    assert (sent.id, sent.direction, sent.nick, sent.peer) == (row, "out", "me", "")
    assert (sent.received_at_ms, sent.state) == (None, state)


def test_an_unknown_delivery_state_is_the_callers_mistake(history: History) -> None:
    row = history.add_sent("@bob", "me", "hi", 1)
    with pytest.raises(ValueError, match="lost"):
        history.set_delivery(row, "10.0.0.5:9000", "lost", 2)


def test_recent_pages_back_with_before(history: History) -> None:
    history.add_received([received(f"m{n}") for n in range(10)])
    history.add_received([received("elsewhere", "#other")])
    last = history.recent("#lobby", limit=4)
    assert texts(last) == ["m6", "m7", "m8", "m9"]
    earlier = history.recent("#lobby", limit=4, before=last[0].id)
    assert texts(earlier) == ["m2", "m3", "m4", "m5"]
    assert texts(history.recent("#lobby", limit=4, before=earlier[0].id)) == ["m0", "m1"]
    assert history.recent("#nowhere") == []


def test_conversations_are_listed_most_recently_active_first(history: History) -> None:
    history.add_received([received("a", "#lobby"), received("b", "@bob")])
    history.add_sent("#dev", "me", "c", 3)
    history.add_received([received("d", "#lobby")])
    assert history.conversations() == ["#lobby", "#dev", "@bob"]


def test_search_ignores_case_and_finds_newest_first(history: History) -> None:
    history.add_received(
        [received("Lunch at noon?"), received("no LUNCH today", "@bob"), received("dinner")]
    )
    assert texts(history.search("lunch")) == ["no LUNCH today", "Lunch at noon?"]
    assert texts(history.search("lunch", limit=1)) == ["no LUNCH today"]
    assert history.search("breakfast") == []


def test_search_finds_a_chinese_substring(history: History) -> None:
    history.add_received([received("我们明天下午三点开会"), received("今天不开会")])
    assert texts(history.search("下午三点")) == ["我们明天下午三点开会"]
    assert texts(history.search("开会")) == ["今天不开会", "我们明天下午三点开会"]


def test_search_uses_the_trigram_index_where_sqlite_has_it(history: History) -> None:
    assert history.search_method == ("fts5" if store.trigram_available() else "like")


@pytest.mark.parametrize("query", ["%", "_", "5%", "a_b", "100%", "a_b_c", '"quoted"', "\\"])
def test_search_takes_wildcards_and_quotes_literally(history: History, query: str) -> None:
    stored = ["5% off", "100% sure", "a_b_c", "axb", 'say "quoted"', "back\\slash", "plain"]
    history.add_received([received(text) for text in stored])
    assert set(texts(history.search(query))) == {text for text in stored if query in text}


def test_search_without_fts5_falls_back_to_like(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "_trigram", False)
    with History.open(path) as history:
        assert history.search_method == "like"
        history.add_received([received("Hello World"), received("50% off")])
        assert texts(history.search("WORLD")) == ["Hello World"]
        assert texts(history.search("%")) == ["50% off"]
    # The next run, with FTS5, indexes what is already there.
    monkeypatch.setattr(store, "_trigram", None)
    if store.trigram_available():
        with History.open(path) as history:
            assert history.search_method == "fts5"
            assert texts(history.search("world")) == ["Hello World"]


def test_select_filters_by_room_nick_time_and_text(history: History) -> None:
    history.add_received(
        [
            received("old lunch", "#lobby", "bob", 1_000),
            received("lunch?", "#lobby", "carol", 2_000),
            received("private lunch", "@bob", "bob", 3_000),
            received("to carol", "@carol", "carol", 4_000),
        ]
    )
    history.add_sent("@bob", "me", "yes, lunch", 5_000)

    def selected(**filters: object) -> list[str]:
        return [message.text for message in history.select(**filters)]  # type: ignore[arg-type]

    assert selected() == ["old lunch", "lunch?", "private lunch", "to carol", "yes, lunch"]
    assert selected(conversation="#lobby") == ["old lunch", "lunch?"]
    assert selected(nick="bob") == ["old lunch", "private lunch", "yes, lunch"]
    assert selected(since_ms=3_000) == ["private lunch", "to carol", "yes, lunch"]
    assert selected(search="LUNCH", since_ms=2_000) == ["lunch?", "private lunch", "yes, lunch"]
    assert selected(conversation="#lobby", nick="carol", search="lu") == ["lunch?"]


def test_select_reads_past_one_page(history: History) -> None:
    history.add_received([received(f"m{n}") for n in range(store._PAGE * 2 + 3)])
    assert [message.text for message in history.select()][-3:] == [
        f"m{n}" for n in range(store._PAGE * 2, store._PAGE * 2 + 3)
    ]


def test_a_new_file_is_private_in_a_private_folder_and_in_wal_mode(path: Path) -> None:
    with History.open(path) as history:
        history.add_received([received("hello")])
        for made in [path, *path.parent.glob("history.sqlite3*")]:
            assert stat.S_IMODE(made.stat().st_mode) == 0o600, made
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert connection.execute("PRAGMA user_version").fetchone() == (store.SCHEMA_VERSION,)
    assert connection.execute("SELECT value FROM meta WHERE key = 'application'").fetchone() == (
        "udpchat",
    )
    connection.close()


def test_reopening_keeps_a_private_file_private(path: Path) -> None:
    History.open(path).close()
    with History.open(path) as history:
        history.add_received([received("hello")])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_empty_file_is_taken_for_a_new_history(path: Path) -> None:
    path.parent.mkdir()
    path.touch(mode=0o600)
    with History.open(path) as history:
        history.add_received([received("hello")])
        assert history.count() == 1


def write_v1(path: Path) -> None:
    """A history as the first version of udpchat wrote it, with two messages."""
    path.parent.mkdir(exist_ok=True)
    connection = sqlite3.connect(path, isolation_level=None)
    store._migrate(connection, target=1)
    connection.execute(
        "INSERT INTO messages (conversation, direction, peer, nick, text, sent_at_ms,"
        " received_at_ms) VALUES ('#lobby', 'in', '10.0.0.5:9000', 'bob', 'Old Times', 1, 2)"
    )
    connection.execute(
        "INSERT INTO messages (conversation, direction, peer, nick, text, sent_at_ms)"
        " VALUES ('#lobby', 'out', '', 'me', 'old reply', 3)"
    )
    connection.execute("INSERT INTO deliveries VALUES (2, '10.0.0.5:9000', 'delivered', 4)")
    assert connection.execute("PRAGMA user_version").fetchone() == (1,)
    connection.close()


def test_a_version_1_file_is_migrated_with_its_messages(path: Path) -> None:
    write_v1(path)
    with History.open(path) as history:
        old = history.recent("#lobby")
        assert [(m.text, m.dialect, m.state) for m in old] == [
            ("Old Times", "udpchat", "shown"),
            ("old reply", "udpchat", "delivered"),
        ]
        assert texts(history.search("old t")) == ["Old Times"]  # indexed by the migration
        history.add_received([received("new", dialect="ipmsg")])
        assert history.recent("#lobby")[-1].dialect == "ipmsg"
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA user_version").fetchone() == (store.SCHEMA_VERSION,)
    indexes = connection.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
    assert ("messages_by_conversation",) in indexes.fetchall()
    connection.close()


def test_a_version_1_file_is_read_as_it_is_when_reading_only(path: Path) -> None:
    write_v1(path)
    before = path.read_bytes()
    with History.open(path, readonly=True) as history:
        assert [(m.text, m.dialect) for m in history.select()] == [
            ("Old Times", "udpchat"),
            ("old reply", "udpchat"),
        ]
        assert history.search_method == "like"
        assert texts(history.search("old t")) == ["Old Times"]
    assert path.read_bytes() == before


def refused(path: Path, message: str, **options: bool) -> None:
    """Opening `path` fails with one line matching `message`, leaving its bytes as they
    were."""
    before = path.read_bytes()
    with pytest.raises(HistoryError, match=message) as raised:
        History.open(path, **options)
    assert "\n" not in str(raised.value)
    assert path.read_bytes() == before


def test_a_newer_schema_is_refused_and_left_unchanged(path: Path) -> None:
    History.open(path).close()
    newer = store.SCHEMA_VERSION + 1
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version = {newer}")
    connection.commit()
    connection.close()
    for readonly in (False, True):
        refused(
            path,
            f"was written by a newer udpchat \\(schema {newer};"
            f" this one reads up to {store.SCHEMA_VERSION}\\)",
            readonly=readonly,
        )


@pytest.mark.parametrize("readonly", [False, True])
def test_random_bytes_are_refused_and_left_unchanged(path: Path, readonly: bool) -> None:
    path.parent.mkdir()
    path.write_bytes(bytes(range(256)) * 64)
    refused(path, "is not a SQLite database", readonly=readonly)


def test_a_damaged_history_is_refused_and_left_unchanged(path: Path) -> None:
    with History.open(path) as history:
        history.add_received([received(f"message {n}" * 20) for n in range(200)])
    data = bytearray(path.read_bytes())
    data[100:4096] = os.urandom(3996)  # the first page's header and schema
    path.write_bytes(bytes(data))
    refused(path, "is not a SQLite database|damaged")


@pytest.mark.parametrize("readonly", [False, True])
def test_another_programs_database_is_refused_and_left_unchanged(
    path: Path, readonly: bool
) -> None:
    path.parent.mkdir()
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE contacts (name TEXT)")
    connection.execute("INSERT INTO contacts VALUES ('alice')")
    connection.commit()
    connection.close()
    refused(path, "is a SQLite database but not udpchat's history", readonly=readonly)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_a_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(HistoryError, match="cannot create the history's folder"):
        History.open(blocker / "history.sqlite3")
    assert blocker.read_text() == "a file where the folder should be"


def test_a_folder_in_place_of_the_file_is_refused(path: Path) -> None:
    path.mkdir(parents=True)
    with pytest.raises(HistoryError, match=r"cannot open history .* for writing"):
        History.open(path)


@pytest.mark.skipif(AS_ROOT, reason=ROOT_SKIP)
def test_a_read_only_file_is_refused(path: Path) -> None:
    History.open(path).close()
    path.chmod(0o400)
    refused(path, "cannot open history .* for writing: Permission denied")
    with History.open(path, readonly=True) as history:  # reading it is fine
        assert history.count() == 0


@pytest.mark.skipif(AS_ROOT, reason=ROOT_SKIP)
def test_a_read_only_folder_is_refused(path: Path) -> None:
    History.open(path).close()
    path.parent.chmod(0o500)
    try:
        refused(path, "cannot open history")
    finally:
        path.parent.chmod(0o700)


def test_writes_to_a_full_disk_fail_with_one_line(history: History) -> None:
    connection = history._connection
    assert connection is not None
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(HistoryError, match=r"^history not written: database or disk is full$"):
        history.add_received([received("x" * 10_000) for _ in range(20)])
    with pytest.raises(HistoryError, match=r"^history not written: "):
        history.add_sent("#lobby", "me", "y" * 100_000, 1)
    assert history.count() == 0


def test_a_read_only_open_never_creates_a_file(path: Path) -> None:
    with pytest.raises(NoHistoryYet, match="no history yet at"):
        History.open(path, readonly=True)
    assert not path.parent.exists()


def test_a_read_only_open_cannot_write(path: Path) -> None:
    History.open(path).close()
    with History.open(path, readonly=True) as history, pytest.raises(HistoryError):
        history.add_sent("#lobby", "me", "hi", 1)


def test_two_primary_opens_share_the_file_and_see_each_others_rows(path: Path) -> None:
    with History.open(path) as first, History.open(path) as second:
        assert (first.shared, second.shared) == (False, True)
        first.add_received([received("from the first")])
        row = second.add_sent("#lobby", "me", "from the second", 2_000)
        first.set_delivery(row, "10.0.0.5:9000", "delivered", 3_000)
        for history in (first, second):
            assert [(m.text, m.state) for m in history.recent("#lobby")] == [
                ("from the first", "shown"),
                ("from the second", "delivered"),
            ]
    with History.open(path) as alone:  # the lock went with the first
        assert not alone.shared
    assert stat.S_IMODE(Path(f"{path}.lock").stat().st_mode) == 0o600


def test_helper_opens_take_no_lock(path: Path) -> None:
    with History.open(path, primary=False), History.open(path) as chat:
        assert not chat.shared


def test_a_closed_history_says_so(history: History) -> None:
    history.close()
    history.close()
    with pytest.raises(HistoryError, match="closed"):
        history.add_sent("#lobby", "me", "hi", 1)
    with pytest.raises(HistoryError, match="closed"):
        history.count()


def test_a_hundred_thousand_messages_open_and_read_quickly(path: Path) -> None:
    """Timings are printed (pytest -s), not asserted: a measurement, not a race.
    Takes about 2 s with the trigram index, which dominates the cost of writing."""
    batches, per_batch = 100, 1_000
    with History.open(path) as history:
        started = time.perf_counter()
        for batch in range(batches):
            history.add_received(
                [
                    received(f"message {batch * per_batch + n}", at_ms=batch * per_batch + n)
                    for n in range(per_batch)
                ]
            )
        writing = time.perf_counter() - started
    started = time.perf_counter()
    with History.open(path) as history:
        last = history.recent("#lobby")
        reading = time.perf_counter() - started
        assert history.count() == batches * per_batch
    assert last[-1].text == f"message {batches * per_batch - 1}"
    print(
        f"\n{batches * per_batch} messages: {writing / batches * 1000:.1f} ms per batch of"
        f" {per_batch} ({batches * per_batch / writing:.0f} messages/s,"
        f" search by {history.search_method}); open + recent(50): {reading * 1000:.1f} ms"
    )


def test_writers_on_several_threads_never_lose_a_message(path: Path) -> None:
    History.open(path).close()
    failures: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            with History.open(path, primary=False) as history:
                for n in range(50):
                    history.add_received([received(f"{writer}.{n}", f"#room{writer}")])
                    row = history.add_sent(f"#room{writer}", "me", f"reply {n}", n)
                    history.set_delivery(row, "10.0.0.5:9000", "delivered", n)
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with History.open(path) as history:
        assert history.count() == 4 * 50 * 2
        assert {m.state for m in history.select(search="reply")} == {"delivered"}


def test_search_finds_messages_the_lazy_index_does_not_hold_yet(path: Path) -> None:
    """Messages are indexed for search at the next search, not as they are stored (a
    message's write stays cheap); until then a search scans them."""
    with History.open(path) as history:
        history.add_received([received("早上好 indexed before")])
        assert texts(history.search("早上好")) == ["早上好 indexed before"]
        history.add_received([received("早上好 stored after")])
        with History.open(path, readonly=True) as reader:  # cannot index: scans the rest
            assert sorted(texts(reader.search("早上好"))) == [
                "早上好 indexed before",
                "早上好 stored after",
            ]
        assert len(history.search("早上好")) == 2  # indexes it now
    connection = sqlite3.connect(path)
    indexed = connection.execute("SELECT value FROM meta WHERE key = 'indexed_to'").fetchone()
    assert indexed == ("2",)
    connection.close()


def test_a_version_2_file_is_made_lazy_and_keeps_what_it_indexed(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, isolation_level=None)
    store._migrate(connection, target=2)
    connection.execute(  # indexed as it is inserted, as version 2 did
        "INSERT INTO messages (conversation, direction, peer, nick, text, sent_at_ms)"
        " VALUES ('#lobby', 'in', '10.0.0.2:9000', 'bob', 'before the migration', 0)"
    )
    connection.close()
    with History.open(path) as history:  # version 3 now
        history.add_received([received("after the migration")])
        assert sorted(texts(history.search("migration"))) == [
            "after the migration",
            "before the migration",
        ]
    connection = sqlite3.connect(path)
    triggers = connection.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    assert "messages_text_insert" not in {row[0] for row in triggers}
    connection.close()


# --- message keys and the outbox (schema version 4) -----------------------------------

BOB = b"bob-inst"
"""Bob's instance id: the first 8 bytes of each of his message keys."""


def key(n: int) -> bytes:
    return BOB + n.to_bytes(8, "big")


def test_a_message_sent_again_is_stored_once(path: Path) -> None:
    with History.open(path) as history:
        assert history.add_received(
            [received("hi", key=key(1)), received("hi", key=key(1)), received("yo", key=key(2))]
        ) == [True, False, True]
        assert history.add_received([received("yo", key=key(2)), received("new", key=key(3))]) == [
            False,
            True,
        ]
    with History.open(path) as history:  # a restarted receiver
        assert history.add_received([received("hi", key=key(1))]) == [False]
        assert texts(history.recent("#lobby")) == ["hi", "yo", "new"]


def test_a_key_is_stored_once_per_chat_port(history: History) -> None:
    """Two chats sharing the file each show a room message both get."""
    assert history.add_received([received("hi", key=key(1), chat_port=9000)]) == [True]
    assert history.add_received([received("hi", key=key(1), chat_port=9001)]) == [True]
    assert history.add_received([received("hi", key=key(1), chat_port=9001)]) == [False]
    assert history.count() == 2


def test_messages_without_a_key_or_a_port_are_always_stored(history: History) -> None:
    raw = received("raw", "@10.0.0.9:8080", "", dialect="raw")
    assert history.add_received([raw, raw]) == [True, True]
    assert history.add_received([raw]) == [True]
    portless = received("hi", key=key(1), chat_port=None)
    assert history.add_received([portless, portless]) == [True, True]
    assert history.count() == 5


def test_our_own_key_is_no_copy_of_a_received_message(history: History) -> None:
    history.add_sent("#lobby", "me", "mine", 1, key=key(1))
    assert history.add_received([received("looped back", key=key(1))]) == [True]


def test_a_failing_batch_with_copies_stores_none_of_its_messages(history: History) -> None:
    history.add_received([received("first", key=key(1))])
    bad = Received("#lobby", "10.0.0.5:9000", "bob", None, 1, 2, "udpchat", key(2), 9000)  # type: ignore[arg-type]
    with pytest.raises(HistoryError, match=r"^history not written: "):
        history.add_received([received("first", key=key(1)), received("x", key=key(3)), bad])
    assert history.count() == 1
    assert history.add_received([received("x", key=key(3))]) == [True]


def entry(expires_at_ms: int = 10_000) -> OutboxEntry:
    return OutboxEntry(BOB, "bob", expires_at_ms)


def test_a_direct_message_waits_in_the_outbox(history: History) -> None:
    row = history.add_sent("@bob", "me", "are you there?", 1_000, key=key(7), outbox=entry())
    history.add_sent("#lobby", "me", "room line, no entry", 1_001, key=key(8))
    assert history.outbox() == [
        Queued(row, key(7), BOB, "bob", "@bob", "are you there?", 1_000, 10_000)
    ]


@pytest.mark.parametrize("state", ["pending", "sent"])
def test_an_unsettled_message_stays_in_the_outbox(history: History, state: str) -> None:
    row = history.add_sent("@bob", "me", "hi", 1, key=key(1), outbox=entry())
    history.set_delivery(row, "10.0.0.5:9000", state, 2)
    assert [queued.message for queued in history.outbox()] == [row]


@pytest.mark.parametrize("state", ["delivered", "failed"])
def test_a_settled_message_leaves_the_outbox(history: History, state: str) -> None:
    first = history.add_sent("@bob", "me", "one", 1, key=key(1), outbox=entry())
    second = history.add_sent("@bob", "me", "two", 2, key=key(2), outbox=entry())
    history.set_delivery(first, "10.0.0.5:9000", state, 3)
    assert [queued.message for queued in history.outbox()] == [second]
    [one, _] = history.recent("@bob")
    assert one.state == state


def test_a_withdrawn_message_is_gone_with_its_outbox_entry(history: History) -> None:
    row = history.add_sent("@bob", "me", "refused", 1, key=key(1), outbox=entry())
    history.add_received([received("theirs", "@bob", key=key(2))])
    [_, theirs] = history.recent("@bob")
    history.withdraw(row)
    history.withdraw(theirs.id)  # only ever one of ours
    assert history.outbox() == []
    assert texts(history.recent("@bob")) == ["theirs"]


def test_an_outbox_entry_needs_the_messages_key(history: History) -> None:
    with pytest.raises(ValueError, match="key"):
        history.add_sent("@bob", "me", "hi", 1, outbox=entry())


def test_a_failing_add_sent_writes_neither_the_message_nor_its_entry(history: History) -> None:
    connection = history._connection
    assert connection is not None
    pages = connection.execute("PRAGMA page_count").fetchone()[0]
    connection.execute(f"PRAGMA max_page_count = {pages}")
    # The message fits in the pages the file has; its entry (a huge nick) does not.
    big = OutboxEntry(BOB, "b" * 100_000, 10_000)
    with pytest.raises(HistoryError, match=r"^history not written: database or disk is full$"):
        history.add_sent("@bob", "me", "hi", 1, key=key(1), outbox=big)
    assert history.count() == 0
    assert history.outbox() == []
    history.add_sent("@bob", "me", "hi", 1, key=key(1))  # the message alone fits
    assert history.count() == 1


def test_the_outbox_survives_a_restart(path: Path) -> None:
    with History.open(path) as history:
        first = history.add_sent("@bob", "me", "one", 1, key=key(1), outbox=entry(5_000))
        second = history.add_sent("@carol", "me", "two", 2, key=key(2), outbox=entry(6_000))
    with History.open(path) as history:
        assert [(q.message, q.text, q.expires_at_ms) for q in history.outbox()] == [
            (first, "one", 5_000),
            (second, "two", 6_000),
        ]


def write_v3(path: Path) -> None:
    """A history as version 3 wrote it: a received message and one of ours, delivered."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, isolation_level=None)
    store._migrate(connection, target=3)
    connection.execute(
        "INSERT INTO messages (conversation, direction, peer, nick, text, sent_at_ms,"
        " received_at_ms) VALUES ('#lobby', 'in', '10.0.0.5:9000', 'bob', 'from v3', 1, 2)"
    )
    connection.execute(
        "INSERT INTO messages (conversation, direction, peer, nick, text, sent_at_ms)"
        " VALUES ('@bob', 'out', '', 'me', 'reply in v3', 3)"
    )
    connection.execute("INSERT INTO deliveries VALUES (2, '10.0.0.5:9000', 'delivered', 4)")
    assert connection.execute("PRAGMA user_version").fetchone() == (3,)
    connection.close()


def test_a_version_3_file_gains_keys_and_an_outbox(path: Path) -> None:
    write_v3(path)
    with History.open(path) as history:
        assert [(m.text, m.state) for m in history.select()] == [
            ("from v3", "shown"),
            ("reply in v3", "delivered"),
        ]
        assert history.outbox() == []
        assert history.add_received([received("keyed", key=key(1))] * 2) == [True, False]
        row = history.add_sent("@bob", "me", "queued", 5, key=key(2), outbox=entry())
        assert [queued.message for queued in history.outbox()] == [row]
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA user_version").fetchone() == (4,)
    names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"messages_by_key", "outbox"} <= names
    old = connection.execute("SELECT key, chat_port FROM messages WHERE id <= 2").fetchall()
    assert old == [(None, None), (None, None)]
    connection.close()


@pytest.mark.parametrize("version", range(1, store.SCHEMA_VERSION + 1))
def test_every_version_is_read_as_it_is_when_reading_only(path: Path, version: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, isolation_level=None)
    store._migrate(connection, target=version)
    connection.execute(
        "INSERT INTO messages (conversation, direction, peer, nick, text, sent_at_ms)"
        " VALUES ('#lobby', 'in', '10.0.0.2:9000', 'bob', 'still here', 1)"
    )
    connection.close()
    before = path.read_bytes()
    with History.open(path, readonly=True) as history:
        assert [(m.text, m.dialect) for m in history.select(search="still")] == [
            ("still here", "udpchat")
        ]
        assert texts(history.recent("#lobby")) == ["still here"]
    assert path.read_bytes() == before
