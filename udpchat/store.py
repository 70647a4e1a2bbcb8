"""The chat history: every message received and sent, in one SQLite file per user
(`$XDG_DATA_HOME/udpchat/history.sqlite3`, default `~/.local/share/udpchat/...`).

Pure storage: no sockets, no UI. `archive` decides what is stored and when; this module
keeps it safe on disk. Its rules:
- Several connections use one file at once (the chat's threads, the process model's
  receiving process, `udpchat history`, a second chat): WAL journal, so readers never
  wait for the writer; `busy_timeout` 5 s for writers; every write is one short
  `BEGIN IMMEDIATE` transaction (taking the write lock at the start, so that two writers
  never deadlock upgrading a read), a batch of received messages being one.
- `synchronous=NORMAL`: a committed transaction survives a crash of the program; a power
  cut may lose the last ones, never the file's consistency.
- The file is the user's alone: created 0600 (so are its `-wal` and `-shm`, which SQLite
  gives the file's mode) in a directory created 0700. An existing file's mode is left as
  its owner set it.
- A file that is not ours is never changed: not a SQLite database, another program's
  database, or one written by a newer udpchat are refused with one line (HistoryError)
  before anything is written to it. An empty file is taken for a new one (a run that
  died between creating the file and its tables).
- The schema version is `PRAGMA user_version`; `_MIGRATIONS` takes a file from each
  version to the next, each step in a transaction of its own.

What the file holds (schema version 4):
- `meta(key, value)`: `application` = `udpchat`, marking the file as udpchat's history.
- `messages`: one row per message, received or sent:
  `id` (order of storing), `conversation` (`#room`, or `@nick` / `@host:port` for a
  direct conversation), `direction` (`in` received, `out` sent by this user), `peer`
  (the sender's `host:port` for `in`; empty for `out`), `nick` (the sender's nickname at
  the time: ours for `out`, empty for a raw peer), `text` (the message as received or
  typed, unaltered), `sent_at_ms` (the sender's clock, ms since the Unix epoch),
  `received_at_ms` (our clock at receipt; NULL for `out`), `dialect` (`udpchat`, `raw`,
  `ipmsg`: how the peer talks), `key` (the message key, docs/protocol.md, DATA: 16 bytes
  naming the message across restarts of either side; NULL for raw and IPMsg messages and
  for rows older than version 4), `chat_port` (for `in`: the UDP port of the chat that
  received it; NULL for `out`).
  A received message is stored once per chat: an `in` row with the same key and chat
  port is a copy sent again (by a restarted sender, or to a receiver killed before its
  ACK left), and is not stored again (`add_received`). Scoped to the port because two
  chats of one user may share the file, and each must show a room message both get.
- `deliveries(message, peer, state, at_ms)`: for each message we sent, its outcome per
  recipient `host:port`: `pending`, `delivered` (acknowledged), `failed`, or `sent`
  (a raw peer, which acknowledges nothing), and when (our clock).
- `outbox(message, key, instance, peer_nick, expires_at_ms)`: our direct messages to a
  udpchat peer not yet delivered: the recipient's installation (its 8-byte instance id),
  its nickname when written, and until when to keep trying (our clock). Written with
  the message, before its first datagram; removed when it is delivered or fails (or
  with the message, `withdraw`). A chat sends again, at start, what it holds.
- `messages_text`: a full-text index of `messages.text` (FTS5, trigram tokens), only
  where SQLite has FTS5 with trigrams. It is built lazily: `meta` row `indexed_to` is
  the last message id it holds; a search looks up the index up to there and scans the
  newer messages with LIKE, and a search that may write indexes them first. Indexing
  on every insert cost most of a message's write (the chat stores each one before it
  acknowledges it; docs/models.md, "What history costs").
Version 1 had no `dialect`, no index by conversation and no `messages_text`; version 2
indexed every message as it was inserted; version 3 had no message keys and no outbox.

Nothing else is stored: no secret keys, no peer list, no datagrams.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

APPLICATION = "udpchat"
BUSY_TIMEOUT_MS = 5000
DELIVERY_STATES = ("pending", "delivered", "failed", "sent")
_SETTLED = ("delivered", "failed")
"""Outcomes that end a message's wait in the outbox."""
_INSERT_RECEIVED = (
    "INSERT INTO messages (conversation, peer, nick, text, sent_at_ms, received_at_ms,"
    " dialect, key, chat_port, direction) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'in')"
    " ON CONFLICT DO NOTHING"
)
"""A received message (`Received`'s fields in order); a copy (the unique index
`messages_by_key`) is skipped. Only uniqueness is skipped: a row that breaks another
constraint fails the batch."""
_PAGE = 500
"""Rows fetched per query by `select`, which never keeps a read open between pages."""


class HistoryError(Exception):
    """The history cannot be opened, read or written; `str(error)` is one line a user
    can act on."""


class NoHistoryYet(HistoryError):
    """A read-only open found no history: no file, or one holding nothing yet."""


def default_path(environ: dict[str, str] | None = None) -> Path:
    """`$XDG_DATA_HOME/udpchat/history.sqlite3`, or under `~/.local/share` when that is
    unset or not absolute (as the XDG Base Directory specification says)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "udpchat" / "history.sqlite3"


class Received(NamedTuple):
    """One incoming message to store (its fields in the order of the INSERT below)."""

    conversation: str
    """"#lobby" for a room, "@bob" / "@10.0.0.5:8080" for a direct conversation."""
    peer: str
    """The sender's address, "host:port"."""
    nick: str
    """The sender's nickname at the time ("" for a raw peer)."""
    text: str
    sent_at_ms: int
    """The sender's clock."""
    received_at_ms: int
    dialect: str
    """"udpchat", "raw" or "ipmsg"."""
    key: bytes | None = None
    """The message key (16 bytes); None for raw and IPMsg messages, which carry none
    (such a message is always stored)."""
    chat_port: int | None = None
    """The UDP port of the chat that received it: a key is stored once per port (two
    chats sharing the file each show a room message both get). None: never a copy."""


class OutboxEntry(NamedTuple):
    """Where a direct message of ours waits to go while its recipient is away."""

    instance: bytes
    """The recipient's installation: its 8-byte instance id."""
    peer_nick: str
    """The recipient's nickname when the message was written."""
    expires_at_ms: int
    """Until when to keep trying (our clock, ms since the Unix epoch)."""


class Queued(NamedTuple):
    """An outbox entry as read back: what to send again, to whom, until when."""

    message: int
    """The message's row id (for `set_delivery` and `withdraw`)."""
    key: bytes
    instance: bytes
    peer_nick: str
    conversation: str
    text: str
    sent_at_ms: int
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message of the history as read back."""

    id: int
    conversation: str
    direction: str
    """"in" (received) or "out" (sent by this user)."""
    peer: str
    nick: str
    text: str
    sent_at_ms: int
    received_at_ms: int | None
    dialect: str
    state: str
    """"shown" for "in"; for "out", from its deliveries: "pending", "delivered",
    "failed", "partly delivered" or "sent" (see `_STATE`)."""


# --- schema ---------------------------------------------------------------------------


def _create_v1(connection: sqlite3.Connection) -> None:
    """Version 1, the first form of the file (kept so that tests can write one)."""
    connection.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    connection.execute(
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation TEXT NOT NULL,
            direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
            peer TEXT NOT NULL,
            nick TEXT NOT NULL,
            text TEXT NOT NULL,
            sent_at_ms INTEGER NOT NULL,
            received_at_ms INTEGER
        )"""
    )
    connection.execute(
        """CREATE TABLE deliveries (
            message INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
            peer TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'sent')),
            at_ms INTEGER NOT NULL,
            PRIMARY KEY (message, peer)
        ) WITHOUT ROWID"""
    )
    connection.execute("INSERT INTO meta VALUES ('application', ?)", (APPLICATION,))


def _v1_to_v2(connection: sqlite3.Connection) -> None:
    """Version 2: each message's dialect (all earlier ones were udpchat's), an index for
    reading one conversation, and the full-text index where SQLite can build it."""
    connection.execute("ALTER TABLE messages ADD COLUMN dialect TEXT NOT NULL DEFAULT 'udpchat'")
    connection.execute("CREATE INDEX messages_by_conversation ON messages (conversation, id)")
    if trigram_available():
        _create_search_index(connection)


def _create_search_index(connection: sqlite3.Connection) -> None:
    # One statement at a time: `executescript` would commit the step's transaction.
    for statement in _SEARCH_INDEX:
        connection.execute(statement)


_SEARCH_INDEX = (
    """CREATE VIRTUAL TABLE messages_text USING fts5(
        text, content='messages', content_rowid='id', tokenize='trigram'
    )""",
    """CREATE TRIGGER messages_text_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_text (rowid, text) VALUES (new.id, new.text);
    END""",
    """CREATE TRIGGER messages_text_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_text (messages_text, rowid, text)
        VALUES ('delete', old.id, old.text);
    END""",
    """CREATE TRIGGER messages_text_update AFTER UPDATE OF text ON messages BEGIN
        INSERT INTO messages_text (messages_text, rowid, text)
        VALUES ('delete', old.id, old.text);
        INSERT INTO messages_text (rowid, text) VALUES (new.id, new.text);
    END""",
    "INSERT INTO messages_text (messages_text) VALUES ('rebuild')",
)
"""The full-text index of messages.text (an external-content FTS5 table, holding only
the index) and the triggers that keep it in step with `messages`."""


def _v2_to_v3(connection: sqlite3.Connection) -> None:
    """Version 3: the full-text index is built lazily (see the module's docstring)."""
    if _has_table(connection, "messages_text"):
        _make_index_lazy(connection)


def _make_index_lazy(connection: sqlite3.Connection) -> None:
    """Stop indexing each message as it is inserted; note what the index holds now. The
    triggers that remove rows from the index apply only to rows it holds."""
    for trigger in ("insert", "delete", "update"):
        connection.execute(f"DROP TRIGGER IF EXISTS messages_text_{trigger}")
    for statement in _LAZY_TRIGGERS:
        connection.execute(statement)
    last = connection.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0]
    connection.execute("INSERT OR REPLACE INTO meta VALUES ('indexed_to', ?)", (str(last),))


_INDEXED_TO = "CAST((SELECT value FROM meta WHERE key = 'indexed_to') AS INTEGER)"
_INDEXED_OR_ALL = f"COALESCE({_INDEXED_TO}, 9223372036854775807)"
"""The last message id the index holds; every one in a file without the mark (version
2 indexed each message as it was inserted)."""
_LAZY_TRIGGERS = (
    f"""CREATE TRIGGER messages_text_delete AFTER DELETE ON messages
        WHEN old.id <= {_INDEXED_TO} BEGIN
        INSERT INTO messages_text (messages_text, rowid, text)
        VALUES ('delete', old.id, old.text);
    END""",
    f"""CREATE TRIGGER messages_text_update AFTER UPDATE OF text ON messages
        WHEN old.id <= {_INDEXED_TO} BEGIN
        INSERT INTO messages_text (messages_text, rowid, text)
        VALUES ('delete', old.id, old.text);
        INSERT INTO messages_text (rowid, text) VALUES (new.id, new.text);
    END""",
)


def _v3_to_v4(connection: sqlite3.Connection) -> None:
    """Version 4: message keys, so that a message sent again is stored (and shown) once,
    and the offline outbox. Older rows keep no key: they are never taken for copies."""
    connection.execute("ALTER TABLE messages ADD COLUMN key BLOB")
    connection.execute("ALTER TABLE messages ADD COLUMN chat_port INTEGER")
    connection.execute(
        "CREATE UNIQUE INDEX messages_by_key ON messages (key, chat_port)"
        " WHERE direction = 'in' AND key IS NOT NULL"
    )
    connection.execute(
        """CREATE TABLE outbox (
            message INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
            key BLOB NOT NULL,
            instance BLOB NOT NULL,
            peer_nick TEXT NOT NULL,
            expires_at_ms INTEGER NOT NULL
        )"""
    )


_MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _create_v1,
    _v1_to_v2,
    _v2_to_v3,
    _v3_to_v4,
]
"""Step i takes the file from version i to i + 1 (version 0: empty)."""
SCHEMA_VERSION = len(_MIGRATIONS)


def _migrate(connection: sqlite3.Connection, target: int = SCHEMA_VERSION) -> None:
    """Bring the file up to version `target`, one transaction per step. Each step checks
    the version again once it holds the write lock: another process may have just
    taken the file there itself."""
    for step, migration in enumerate(_MIGRATIONS[:target]):
        connection.execute("BEGIN IMMEDIATE")
        try:
            if _user_version(connection) == step:
                migration(connection)
                connection.execute(f"PRAGMA user_version = {step + 1}")
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise


def _user_version(connection: sqlite3.Connection) -> int:
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


_trigram: bool | None = None


def trigram_available() -> bool:
    """Whether this SQLite has FTS5 with the trigram tokenizer (SQLite 3.34 or later,
    built with FTS5, as Python's usually is)."""
    global _trigram
    if _trigram is None:
        probe = sqlite3.connect(":memory:")
        try:
            probe.execute("CREATE VIRTUAL TABLE probe USING fts5(text, tokenize='trigram')")
            _trigram = True
        except sqlite3.Error:
            _trigram = False
        finally:
            probe.close()
    return _trigram


# --- reading rows ---------------------------------------------------------------------

_STATE = """CASE WHEN m.direction = 'in' THEN 'shown' ELSE (
    SELECT CASE
        WHEN count(*) = 0 THEN 'pending'
        WHEN total(state = 'sent') = count(*) THEN 'sent'
        WHEN total(state = 'delivered') > 0
            AND total(state = 'pending') + total(state = 'failed') = 0 THEN 'delivered'
        WHEN total(state = 'failed') > 0 AND total(state = 'delivered') = 0 THEN 'failed'
        WHEN total(state = 'failed') > 0 THEN 'partly delivered'
        ELSE 'pending'
    END FROM deliveries WHERE message = m.id
) END"""
"""A sent message's state from its deliveries: none yet: pending; all to raw peers:
sent; every recipient acknowledged it (or, raw, was sent it): delivered; some failed
and none acknowledged: failed; some acknowledged and some failed: partly delivered;
otherwise (some still pending): pending."""


def _columns(dialect: str) -> str:
    return (
        "m.id, m.conversation, m.direction, m.peer, m.nick, m.text, m.sent_at_ms,"
        f" m.received_at_ms, {dialect}, {_STATE}"
    )


def _like_pattern(text: str) -> str:
    """`text` as a LIKE pattern (with ESCAPE '\\') matching it anywhere, literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# --- the history ----------------------------------------------------------------------


class History:
    """One connection to a history file. Its methods may be called from any thread, one
    at a time (a lock sees to it); other threads and processes open their own."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        path: Path,
        *,
        shared: bool,
        lock: int | None,
        fts: bool,
        dialect_column: bool,
    ) -> None:
        """Use `History.open`."""
        self._connection: sqlite3.Connection | None = connection
        self.path = path
        self.shared = shared
        """A primary open found another udpchat holding this file: both write to it."""
        self._lock_descriptor = lock
        self._fts = fts
        self._columns = _columns("m.dialect" if dialect_column else "'udpchat'")
        self._mutex = threading.RLock()
        self._readonly = False
        """Opened with `readonly`: a search scans what the index lacks, never adds it."""

    @classmethod
    def open(
        cls, path: Path | None = None, *, primary: bool = True, readonly: bool = False
    ) -> History:
        """The history in `path` (default `default_path()`), created if missing and
        brought to the current schema. A `primary` open (the chat's own, as opposed to
        its helper processes) locks `<path>.lock` and sets `shared` when another
        process holds it. `readonly` opens never create or change anything (and raise
        NoHistoryYet where there is nothing to read). HistoryError for every file
        that cannot be used; such a file is left as it was."""
        path = default_path() if path is None else path
        if readonly:
            return cls._open_readonly(path)
        created = _create_file(path)
        try:
            connection = sqlite3.connect(
                path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as error:
            raise HistoryError(f"cannot open history {path}: {_one_line(error)}") from None
        lock: int | None = None
        try:
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            version, _ = _identify(connection, path)
            _pragmas(connection, path)
            if version < SCHEMA_VERSION:
                _migrate(connection)
            # Take the write lock once, so that a file that can be read but not written
            # (its folder read-only: no -wal can be made) is refused now, not at the
            # first message.
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("COMMIT")
            if trigram_available() and not _has_table(connection, "messages_text"):
                # Written where SQLite had no trigrams; this one has: index it now.
                connection.execute("BEGIN IMMEDIATE")
                if not _has_table(connection, "messages_text"):
                    _create_search_index(connection)
                    _make_index_lazy(connection)
                connection.execute("COMMIT")
            shared = False
            if primary:
                lock, shared = _take_lock(path)
            fts = trigram_available() and _has_table(connection, "messages_text")
            return cls(connection, path, shared=shared, lock=lock, fts=fts, dialect_column=True)
        except BaseException as error:
            if lock is not None:
                os.close(lock)
            with suppress(sqlite3.Error):
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
            connection.close()
            if isinstance(error, sqlite3.Error):
                what = "create" if created else "open"
                raise HistoryError(f"cannot {what} history {path}: {_one_line(error)}") from None
            raise

    @classmethod
    def _open_readonly(cls, path: Path) -> History:
        try:
            if not stat.S_ISREG(path.stat().st_mode):
                raise HistoryError(f"history {path} is not a regular file")
        except FileNotFoundError:
            raise NoHistoryYet(f"no history yet at {path}") from None
        except OSError as error:
            raise HistoryError(f"cannot read history {path}: {error.strerror}") from None
        try:
            connection = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as error:
            raise HistoryError(f"cannot read history {path}: {_one_line(error)}") from None
        try:
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA query_only = ON")
            version, tables = _identify(connection, path)
            if not tables:
                raise NoHistoryYet(f"no history yet at {path}")
            # An older file is read as it is: migrating it is a write.
            fts = trigram_available() and _has_table(connection, "messages_text")
            history = cls(
                connection,
                path,
                shared=False,
                lock=None,
                fts=fts,
                dialect_column=version >= 2,
            )
            history._readonly = True
            return history
        except BaseException as error:
            connection.close()
            if isinstance(error, sqlite3.Error):
                raise HistoryError(f"cannot read history {path}: {_one_line(error)}") from None
            raise

    @property
    def search_method(self) -> str:
        """How `search` finds text here: "fts5" (the trigram index) or "like" (a scan)."""
        return "fts5" if self._fts else "like"

    # --- writing ---

    def add_received(self, messages: Sequence[Received]) -> list[bool]:
        """Store `messages`, all or none, in one transaction (one disk sync, however many
        the batch holds), but for copies: for each, whether it was stored. A copy has the
        key and chat port of an `in` row stored before, or of an earlier message of the
        batch; a message without a key or a chat port is never one."""
        if not messages:
            return []
        with self._writing() as connection:
            last = connection.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0]
            # The unique index `messages_by_key` finds the copies as it takes the keys: no
            # lookup of its own on the path every batch takes.
            inserted = connection.executemany(_INSERT_RECEIVED, messages).rowcount
            if inserted == len(messages):
                return [True] * len(messages)
            added = set(
                connection.execute(
                    "SELECT key, chat_port FROM messages WHERE id > ? AND key IS NOT NULL",
                    (last,),
                )
            )
        return [_stored_now(message, added) for message in messages]

    def add_sent(
        self,
        conversation: str,
        nick: str,
        text: str,
        sent_at_ms: int,
        dialect: str = "udpchat",
        *,
        key: bytes | None = None,
        outbox: OutboxEntry | None = None,
    ) -> int:
        """Store a message of ours (pending until `set_delivery`) under its `key`, and
        with it, when given, its `outbox` entry: both or neither. Its row id."""
        if outbox is not None and key is None:
            raise ValueError("an outbox entry needs the message's key")
        with self._writing() as connection:
            cursor = connection.execute(
                "INSERT INTO messages (conversation, direction, peer, nick, text, sent_at_ms,"
                " received_at_ms, dialect, key) VALUES (?, 'out', '', ?, ?, ?, NULL, ?, ?)",
                (conversation, nick, text, sent_at_ms, dialect, key),
            )
            row = cursor.lastrowid
            if outbox is not None:
                connection.execute(
                    "INSERT INTO outbox (message, key, instance, peer_nick, expires_at_ms)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (row, key, *outbox),
                )
        assert row is not None
        return row

    def withdraw(self, message: int) -> None:
        """Delete our message `message`, which the runtime refused (so it never left),
        with its outbox entry and deliveries."""
        with self._writing() as connection:
            # The outbox row and deliveries go by their foreign keys' ON DELETE CASCADE.
            connection.execute(
                "DELETE FROM messages WHERE id = ? AND direction = 'out'", (message,)
            )

    def set_delivery(self, message: int, peer: str, state: str, at_ms: int) -> None:
        """Record what became of our message `message` for the recipient `peer`
        ("host:port"), replacing what was recorded before for that recipient. Delivered
        or failed, it leaves the outbox in the same transaction: killed between the two,
        a chat would send again a message already settled."""
        if state not in DELIVERY_STATES:
            raise ValueError(f"delivery state {state!r} is not one of {DELIVERY_STATES}")
        with self._writing() as connection:
            connection.execute(
                "INSERT INTO deliveries (message, peer, state, at_ms) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (message, peer) DO UPDATE SET state = excluded.state,"
                " at_ms = excluded.at_ms",
                (message, peer, state, at_ms),
            )
            if state in _SETTLED:
                connection.execute("DELETE FROM outbox WHERE message = ?", (message,))

    # --- reading ---

    def recent(
        self, conversation: str, limit: int = 50, before: int | None = None
    ) -> list[StoredMessage]:
        """The last `limit` messages of `conversation` (those before the message with id
        `before`, to scroll back), oldest first."""
        where = "m.conversation = ?"
        parameters: list[object] = [conversation]
        if before is not None:
            where += " AND m.id < ?"
            parameters.append(before)
        rows = self._query(
            f"SELECT {self._columns} FROM messages m WHERE {where} ORDER BY m.id DESC LIMIT ?",
            (*parameters, limit),
        )
        return rows[::-1]

    def conversations(self) -> list[str]:
        """Every conversation in the history, the most recently active first."""
        with self._reading() as connection:
            return [
                str(row[0])
                for row in connection.execute(
                    "SELECT conversation FROM messages GROUP BY conversation ORDER BY max(id) DESC"
                )
            ]

    def search(self, text: str, limit: int = 100) -> list[StoredMessage]:
        """Up to `limit` messages holding `text` (ignoring case), newest first, in every
        conversation. Chinese text is found as any other: by substring."""
        self._index_new()
        where, parameters = self._text_filter(text)
        return self._query(
            f"SELECT {self._columns} FROM messages m WHERE {where} ORDER BY m.id DESC LIMIT ?",
            (*parameters, limit),
        )

    def select(
        self,
        *,
        conversation: str | None = None,
        nick: str | None = None,
        search: str | None = None,
        since_ms: int | None = None,
    ) -> Iterator[StoredMessage]:
        """Every message that passes all the filters given, oldest first: in
        `conversation`; with `nick` (the direct conversation "@nick", or written by that
        nick); holding `search`; sent (by the sender's clock, as shown) at or after
        `since_ms`. Read a page at a time, so no read stays open while the caller works."""
        clauses: list[str] = []
        parameters: list[object] = []
        if conversation is not None:
            clauses.append("m.conversation = ?")
            parameters.append(conversation)
        if nick is not None:
            clauses.append("(m.conversation = ? OR m.nick = ?)")
            parameters += [f"@{nick}", nick]
        if search is not None:
            self._index_new()
            where, more = self._text_filter(search)
            clauses.append(where)
            parameters += more
        if since_ms is not None:
            clauses.append("m.sent_at_ms >= ?")
            parameters.append(since_ms)
        after = 0
        while True:
            page = self._query(
                f"SELECT {self._columns} FROM messages m"
                f" WHERE {' AND '.join([*clauses, 'm.id > ?'])} ORDER BY m.id LIMIT {_PAGE}",
                (*parameters, after),
            )
            yield from page
            if len(page) < _PAGE:
                return
            after = page[-1].id

    def outbox(self) -> list[Queued]:
        """Every outbox entry, oldest first, expired ones too: the core fails those at
        once, which removes them (`set_delivery`)."""
        with self._reading() as connection:
            return [
                Queued(*row)
                for row in connection.execute(
                    "SELECT o.message, o.key, o.instance, o.peer_nick, m.conversation, m.text,"
                    " m.sent_at_ms, o.expires_at_ms FROM outbox o"
                    " JOIN messages m ON m.id = o.message ORDER BY o.message"
                )
            ]

    def instance_of(self, nick: str) -> bytes | None:
        """The installation (instance id) of the udpchat peer that last wrote to us as
        `nick`, from its messages' keys; None when none did."""
        with self._reading() as connection:
            row = connection.execute(
                "SELECT substr(key, 1, 8) FROM messages WHERE direction = 'in' AND nick = ?"
                " AND key IS NOT NULL AND dialect = 'udpchat' ORDER BY id DESC LIMIT 1",
                (nick,),
            ).fetchone()
        if row is None or bytes(row[0]) == bytes(8):
            return None
        return bytes(row[0])

    def count(self) -> int:
        """How many messages the history holds."""
        with self._reading() as connection:
            return int(connection.execute("SELECT count(*) FROM messages").fetchone()[0])

    def close(self) -> None:
        """Close the connection and let go of the lock (a second call does nothing)."""
        with self._mutex:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            if self._lock_descriptor is not None:
                os.close(self._lock_descriptor)
                self._lock_descriptor = None

    def __enter__(self) -> History:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- helpers ---

    def _text_filter(self, text: str) -> tuple[str, list[object]]:
        """A WHERE clause for messages holding `text`: the trigram index for three
        characters or more (it has no trigram to look up for fewer) over the messages it
        holds, LIKE over the rest."""
        like = "m.text LIKE ? ESCAPE '\\'"
        if self._fts and len(text) >= 3:
            phrase = '"' + text.replace('"', '""') + '"'
            return (
                "(m.id IN (SELECT rowid FROM messages_text WHERE messages_text MATCH ?)"
                f" OR (m.id > {_INDEXED_OR_ALL} AND {like}))",
                [phrase, _like_pattern(text)],
            )
        return like, [_like_pattern(text)]

    def _index_new(self) -> None:
        """Add the messages stored since the last search to the full-text index (one
        transaction), where this open may write; a failure leaves them to LIKE."""
        if not self._fts or self._readonly:
            return
        with suppress(HistoryError), self._writing() as connection:
            connection.execute(
                "INSERT INTO messages_text (rowid, text)"
                f" SELECT id, text FROM messages WHERE id > {_INDEXED_OR_ALL} ORDER BY id"
            )
            connection.execute(
                "INSERT OR REPLACE INTO meta VALUES"
                " ('indexed_to', (SELECT COALESCE(MAX(id), 0) FROM messages))"
            )

    def _query(self, sql: str, parameters: Sequence[object]) -> list[StoredMessage]:
        with self._reading() as connection:
            return [StoredMessage(*row) for row in connection.execute(sql, parameters)]

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._mutex:
            if self._connection is None:
                raise HistoryError(f"history {self.path} is closed")
            try:
                yield self._connection
            except sqlite3.Error as error:
                raise HistoryError(f"history not read: {_one_line(error)}") from None

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One transaction, taking the write lock at once; HistoryError if it fails
        (a full disk, an I/O error, a file gone read-only), with nothing written."""
        with self._mutex:
            connection = self._connection
            if connection is None:
                raise HistoryError(f"history not written: {self.path} is closed")
            try:
                connection.execute("BEGIN IMMEDIATE")
                yield connection
                connection.execute("COMMIT")
            except sqlite3.Error as error:
                with suppress(sqlite3.Error):
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                raise HistoryError(f"history not written: {_one_line(error)}") from None
            except BaseException:
                with suppress(sqlite3.Error):
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                raise


def _create_file(path: Path) -> bool:
    """Make sure `path` is a regular file this user can write, creating it (0600, in a
    directory created 0700) if missing; whether it was created."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise HistoryError(
            f"cannot create the history's folder {path.parent}: {error.strerror}"
        ) from None
    created = True
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        created = False
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        except OSError as error:
            raise HistoryError(
                f"cannot open history {path} for writing: {error.strerror}"
            ) from None
    except OSError as error:
        raise HistoryError(f"cannot create history {path}: {error.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise HistoryError(f"history {path} is not a regular file")
    finally:
        os.close(descriptor)
    return created


def _identify(connection: sqlite3.Connection, path: Path) -> tuple[int, bool]:
    """The file's schema version and whether it has any tables, reading only; HistoryError
    for a file that is not udpchat's or is newer than this program."""
    try:
        tables = {
            str(row[0])
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        version = _user_version(connection)
    except sqlite3.DatabaseError as error:
        if isinstance(error, sqlite3.OperationalError) and "not a database" not in str(error):
            raise
        raise HistoryError(
            f"{path} is not a SQLite database, or is damaged ({_one_line(error)});"
            " udpchat left it as it is: move it away, or choose another file with --history"
        ) from None
    if not tables:
        if version != 0:
            raise HistoryError(f"{path} is a SQLite database but not udpchat's history")
        return 0, False
    ours = False
    if "meta" in tables:
        with suppress(sqlite3.Error):
            row = connection.execute("SELECT value FROM meta WHERE key = 'application'").fetchone()
            ours = row is not None and row[0] == APPLICATION
    if not ours:
        raise HistoryError(
            f"{path} is a SQLite database but not udpchat's history; udpchat left it as it"
            " is: choose another file with --history"
        )
    if version > SCHEMA_VERSION:
        raise HistoryError(
            f"{path} was written by a newer udpchat (schema {version};"
            f" this one reads up to {SCHEMA_VERSION}): update udpchat, or use another file"
        )
    return version, True


def _pragmas(connection: sqlite3.Connection, path: Path) -> None:
    """WAL (so that readers and the writer never wait for each other) and its settings;
    only once the file is known to be ours, since WAL changes the file's header."""
    mode = str(connection.execute("PRAGMA journal_mode = WAL").fetchone()[0])
    if mode.lower() != "wal":
        raise HistoryError(
            f"cannot use history {path}: SQLite could not put it in WAL mode ({mode})"
        )
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("PRAGMA foreign_keys = ON")


def _stored_now(message: Received, added: set[tuple[bytes, int]]) -> bool:
    """Whether `add_received` stored `message`, given the keys and chat ports of the rows
    its batch added: a message without a key or a chat port always is; of the messages
    that share a key and port, only the first (which takes them out of `added`)."""
    if message.key is None or message.chat_port is None:
        return True
    identity = (message.key, message.chat_port)
    if identity not in added:
        return False
    added.remove(identity)
    return True


def _has_table(connection: sqlite3.Connection, name: str) -> bool:
    row = connection.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    return row is not None


def _take_lock(path: Path) -> tuple[int | None, bool]:
    """Lock `<path>.lock` for as long as this open lasts: (its descriptor, False), or
    (None, True) when another open already holds it."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise HistoryError(f"cannot open {lock_path}: {error.strerror}") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None, True
    except OSError as error:
        os.close(descriptor)
        raise HistoryError(f"cannot lock {lock_path}: {error.strerror}") from None
    return descriptor, False
